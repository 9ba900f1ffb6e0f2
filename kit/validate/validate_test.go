package validate_test

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/kit/status"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

func TestViolationHelpers(t *testing.T) {
	tests := []struct {
		name string
		add  func(v *validate.Violations)
		want string // description of the single violation, "" for none
	}{
		{"length ok", func(v *validate.Violations) { v.Length("f", "abc", 1, 3) }, ""},
		{"length required", func(v *validate.Violations) { v.Length("f", "", 1, 3) }, "is required"},
		{"length short", func(v *validate.Violations) { v.Length("f", "a", 2, 3) }, "must be at least 2 characters"},
		{"length long", func(v *validate.Violations) { v.Length("f", "abcd", 1, 3) }, "must be at most 3 characters"},
		{"length counts runes", func(v *validate.Violations) { v.Length("f", "äöü", 1, 3) }, ""},
		{"length bad utf8", func(v *validate.Violations) { v.Length("f", "\xff", 0, 3) }, "must be valid UTF-8"},
		{"required", func(v *validate.Violations) { v.Required("f", "") }, "is required"},
		{"range ok", func(v *validate.Violations) { v.Range("f", 5, 1, 5) }, ""},
		{"range low", func(v *validate.Violations) { v.Range("f", 0, 1, 5) }, "must be between 1 and 5"},
		{"range high", func(v *validate.Violations) { v.Range("f", 6, 1, 5) }, "must be between 1 and 5"},
		{"max items", func(v *validate.Violations) { v.MaxItems("f", 4, 3) }, "must have at most 3 elements"},
	}
	for _, tt := range tests {
		var v validate.Violations
		tt.add(&v)
		err := v.Err()
		if tt.want == "" {
			if err != nil {
				t.Errorf("%s: Err() = %v, want nil", tt.name, err)
			}
			continue
		}
		br := status.BadRequest(err)
		if grpcstatus.Code(err) != codes.InvalidArgument || br == nil || len(br.GetFieldViolations()) != 1 {
			t.Fatalf("%s: Err() = %v, want InvalidArgument with one violation", tt.name, err)
		}
		if got := br.GetFieldViolations()[0]; got.GetField() != "f" || got.GetDescription() != tt.want {
			t.Errorf("%s: violation = %v, want f: %s", tt.name, got, tt.want)
		}
	}
}

func TestCheckListsEveryViolation(t *testing.T) {
	s := validate.NewSet()
	validate.Rule(s, func(m *greeterv1.StreamGreetingsRequest, v *validate.Violations) {
		v.Length("name", m.GetName(), 1, 10)
		v.Range("count", int64(m.GetCount()), 1, 10)
	})
	err := s.Check(&greeterv1.StreamGreetingsRequest{Name: strings.Repeat("x", 11), Count: 0})
	br := status.BadRequest(err)
	if len(br.GetFieldViolations()) != 2 {
		t.Fatalf("Check = %v, want two violations", err)
	}
	if status.Reason(err) != validate.Reason || !strings.Contains(grpcstatus.Convert(err).Message(), "(and 1 more)") {
		t.Errorf("Check = %v, want reason %s and a message counting the rest", err, validate.Reason)
	}
	if err := s.Check(&greeterv1.StreamGreetingsRequest{Name: "ok", Count: 3}); err != nil {
		t.Errorf("Check(valid) = %v, want nil", err)
	}
}

type selfChecked struct{ *wrapperspb.StringValue }

func (selfChecked) Validate() error { return errors.New("self") }

func TestCheckFallbacks(t *testing.T) {
	s := validate.NewSet()
	tests := []struct {
		name string
		m    any
		want string
	}{
		{"not a message", 42, ""},
		{"message without rule", &greeterv1.SayHelloRequest{}, ""},
		{"own Validate method", selfChecked{wrapperspb.String("x")}, "self"},
	}
	for _, tt := range tests {
		err := s.Check(tt.m)
		if got := errString(err); got != tt.want {
			t.Errorf("%s: Check = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestHas(t *testing.T) {
	s := validate.NewSet()
	validate.Rule(s, func(*greeterv1.SayHelloRequest, *validate.Violations) {})
	tests := []struct {
		name string
		has  bool
		got  bool
	}{
		{"registered", true, s.Has((&greeterv1.SayHelloRequest{}).ProtoReflect().Descriptor())},
		{"no fields needs no rule", true, s.Has((&emptypb.Empty{}).ProtoReflect().Descriptor())},
		{"unregistered", false, s.Has((&greeterv1.ChatRequest{}).ProtoReflect().Descriptor())},
	}
	for _, tt := range tests {
		if tt.got != tt.has {
			t.Errorf("Has(%s) = %v, want %v", tt.name, tt.got, tt.has)
		}
	}
}

func FuzzGreeterRules(f *testing.F) {
	s := validate.NewSet()
	validate.Rule(s, func(m *greeterv1.SayHelloRequest, v *validate.Violations) {
		v.Length("name", m.GetName(), 1, 100)
	})
	f.Add("Ada")
	f.Add("")
	f.Add("\xff\xfe")
	f.Fuzz(func(t *testing.T, name string) {
		err := s.Check(&greeterv1.SayHelloRequest{Name: name})
		if err != nil && grpcstatus.Code(err) != codes.InvalidArgument {
			t.Fatalf("Check(%q) = %v, want nil or InvalidArgument", name, err)
		}
	})
}

// TestCheckKeepsEachErrorsViolations checks that the violations of one
// Check are neither carried into the next one nor changed by it, with
// Checks running concurrently.
func TestCheckKeepsEachErrorsViolations(t *testing.T) {
	s := validate.NewSet()
	validate.Rule(s, func(m *greeterv1.StreamGreetingsRequest, v *validate.Violations) {
		v.Length("name", m.GetName(), 1, 10)
		v.Range("count", int64(m.GetCount()), 1, 10)
	})
	tests := []struct {
		req  *greeterv1.StreamGreetingsRequest
		want []string // fields in violation
	}{
		{&greeterv1.StreamGreetingsRequest{Name: "", Count: 0}, []string{"name", "count"}},
		{&greeterv1.StreamGreetingsRequest{Name: "ok", Count: 0}, []string{"count"}},
		{&greeterv1.StreamGreetingsRequest{Name: "ok", Count: 1}, nil},
		{&greeterv1.StreamGreetingsRequest{Name: strings.Repeat("x", 11), Count: 1}, []string{"name"}},
	}
	fields := func(err error) []string {
		var out []string
		for _, f := range status.BadRequest(err).GetFieldViolations() {
			out = append(out, f.GetField())
		}
		return out
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			var errs []error
			for i := range 50 {
				errs = append(errs, s.Check(tests[(i+g)%len(tests)].req))
			}
			// Checked after all of them ran: an error must not change.
			for i, err := range errs {
				want := tests[(i+g)%len(tests)].want
				if got := fields(err); strings.Join(got, ",") != strings.Join(want, ",") {
					t.Errorf("Check #%d = %v, want violations of %v", i, got, want)
				}
			}
		})
	}
	wg.Wait()
}
