package notify

import (
	"embed"
	"fmt"
	"strings"
	"text/template"
	"unicode/utf8"
)

// The templates, embedded from templates/<name>.tmpl. Each defines
// "subject", one line, and "text", the plain-text body.
//
//go:embed templates/*.tmpl
var templateFS embed.FS

// Template names: each is a file templates/<name>.tmpl and the template
// field of the notifications rendered from it.
const (
	TemplateWelcome           = "welcome"
	TemplateOrderConfirmed    = "order_confirmed"
	TemplateOrderCancelled    = "order_cancelled"
	TemplateShipmentDelivered = "shipment_delivered"
)

// TemplateNames lists every template.
var TemplateNames = []string{TemplateWelcome, TemplateOrderConfirmed, TemplateOrderCancelled, TemplateShipmentDelivered}

// MaxSubjectLen bounds a rendered subject line, in characters.
const MaxSubjectLen = 200

// TemplateData is what the templates see. Fields an event does not have
// are empty.
type TemplateData struct {
	// Shop is the shop's name, Config.ShopName.
	Shop string
	// Name is the user's display name, or their address when they have
	// none.
	Name  string
	Email string
	// OrderID, Total (formatted, such as "12.50 EUR"), ShipmentID,
	// Reason (of a cancellation) and Description (the carrier's) come
	// from the event.
	OrderID     string
	Total       string
	ShipmentID  string
	Reason      string
	Description string
}

// Templates renders messages from the embedded templates. It is
// immutable and safe for concurrent use.
type Templates struct {
	sets map[string]*template.Template
}

// ParseTemplates parses the embedded templates and checks that each
// defines "subject" and "text".
func ParseTemplates() (*Templates, error) {
	t := &Templates{sets: make(map[string]*template.Template, len(TemplateNames))}
	for _, name := range TemplateNames {
		set, err := template.New(name).Option("missingkey=error").ParseFS(templateFS, "templates/"+name+".tmpl")
		if err != nil {
			return nil, fmt.Errorf("notify: template %s: %w", name, err)
		}
		for _, part := range []string{"subject", "text"} {
			if set.Lookup(part) == nil {
				return nil, fmt.Errorf("notify: template %s defines no %q", name, part)
			}
		}
		t.sets[name] = set
	}
	return t, nil
}

// Render renders template name with d and returns the subject, on one
// line of at most MaxSubjectLen characters (line breaks and runs of
// spaces become one space, so no field can inject a header), and the
// body, with "\n" line ends.
func (t *Templates) Render(name string, d TemplateData) (subject, body string, err error) {
	set := t.sets[name]
	if set == nil {
		return "", "", fmt.Errorf("notify: no template %q", name)
	}
	var sb, bb strings.Builder
	if err := set.ExecuteTemplate(&sb, "subject", d); err != nil {
		return "", "", fmt.Errorf("notify: render %s subject: %w", name, err)
	}
	if err := set.ExecuteTemplate(&bb, "text", d); err != nil {
		return "", "", fmt.Errorf("notify: render %s text: %w", name, err)
	}
	subject = truncate(strings.Join(strings.Fields(sb.String()), " "), MaxSubjectLen)
	body = strings.ReplaceAll(strings.ReplaceAll(bb.String(), "\r\n", "\n"), "\r", "\n")
	return subject, strings.TrimLeft(body, "\n"), nil
}

// truncate returns s cut to at most n characters, with "…" when cut.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
