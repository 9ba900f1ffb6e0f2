package canary

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/switchboard-rpc/switchboard/kit/discovery"
)

// Bounds on a policy document.
const (
	// MaxDocumentSize bounds a policy document.
	MaxDocumentSize = 1 << 20
	// MaxVersions bounds the versions of one service's policy.
	MaxVersions = 16
	// MaxWeight bounds one version's weight.
	MaxWeight = 1_000_000
)

// Policy gives each version of a service its weight; a version's share of
// calls is its weight over the sum.
type Policy map[string]uint32

// Policies holds the policy of each service by name.
type Policies map[string]Policy

// Parse reads a policy document: YAML (so JSON too) mapping each service
// to its versions' weights. An empty document has no policies. Every
// service needs a positive total weight.
func Parse(data []byte) (Policies, error) {
	if len(data) > MaxDocumentSize {
		return nil, fmt.Errorf("canary: policy of %d bytes, at most %d", len(data), MaxDocumentSize)
	}
	var raw map[string]map[string]int64
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("canary: policy: %w", err)
	}
	out := make(Policies, len(raw))
	var errs []error
	for _, svc := range slices.Sorted(maps.Keys(raw)) {
		versions := raw[svc]
		if err := discovery.ValidateService(svc); err != nil {
			errs = append(errs, err)
			continue
		}
		if len(versions) == 0 || len(versions) > MaxVersions {
			errs = append(errs, fmt.Errorf("%s: %d versions, want 1 to %d", svc, len(versions), MaxVersions))
			continue
		}
		p := make(Policy, len(versions))
		var total int64
		for v, w := range versions {
			if v == "" || len(v) > discovery.MaxFieldLen {
				errs = append(errs, fmt.Errorf("%s: version %q is empty or too long", svc, v))
				continue
			}
			if w < 0 || w > MaxWeight {
				errs = append(errs, fmt.Errorf("%s: version %s weight %d is outside 0..%d", svc, v, w, MaxWeight))
				continue
			}
			p[v] = uint32(w)
			total += w
		}
		if total == 0 {
			errs = append(errs, fmt.Errorf("%s: weights add up to 0", svc))
			continue
		}
		out[svc] = p
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("canary: policy: %w", err)
	}
	return out, nil
}

// Table holds the current policies; the balancer reads it on every pick.
// It is safe for concurrent use.
type Table struct {
	cur    atomic.Pointer[Policies]
	logger *slog.Logger
}

// NewTable returns a table holding initial (nil: no policies), logging
// policy changes and rejected documents to logger (nil: discard).
func NewTable(initial Policies, logger *slog.Logger) *Table {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t := &Table{logger: logger}
	t.Set(initial)
	return t
}

// Set replaces every policy; it applies to the next pick.
func (t *Table) Set(p Policies) {
	if p == nil {
		p = Policies{}
	}
	t.cur.Store(&p)
}

// Policies returns the current policies. The caller must not modify them.
func (t *Table) Policies() Policies { return *t.cur.Load() }

// current returns the pointer the balancer caches plans by.
func (t *Table) current() *Policies { return t.cur.Load() }

// Source delivers a policy document each time it may have changed.
type Source interface {
	// Watch calls apply with the document now and after each change,
	// until ctx ends; it returns ctx's error then, or an error that
	// stops it for good. A missing document is delivered as empty.
	Watch(ctx context.Context, apply func(doc []byte)) error
}

// Follow applies every document src delivers until ctx ends. A document
// that does not parse is logged and ignored: the last good policies stay.
// It returns what src.Watch returns.
func (t *Table) Follow(ctx context.Context, src Source) error {
	var last []byte
	first := true
	return src.Watch(ctx, func(doc []byte) {
		if !first && string(doc) == string(last) {
			return
		}
		p, err := Parse(doc)
		if err != nil {
			t.logger.LogAttrs(ctx, slog.LevelWarn, "canary policy rejected; keeping the previous one", slog.String("error", err.Error()))
			return
		}
		first, last = false, slices.Clone(doc)
		t.Set(p)
		t.logger.LogAttrs(ctx, slog.LevelInfo, "canary policy applied", slog.String("policies", p.String()))
	})
}

// String renders the policies compactly, services and versions sorted:
// "inventory{v1:80 v2:20}".
func (p Policies) String() string {
	var b strings.Builder
	for i, svc := range slices.Sorted(maps.Keys(p)) {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(svc)
		b.WriteByte('{')
		for j, v := range slices.Sorted(maps.Keys(p[svc])) {
			if j > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%s:%d", v, p[svc][v])
		}
		b.WriteByte('}')
	}
	return b.String()
}

// tables are the published tables by name.
var tables sync.Map // string → *Table

// Publish makes t the table the balancer reads for ClientConns whose
// config names it (LoadBalancingConfig; "" is the default). It returns a
// function that withdraws it, if it is still the one published.
func Publish(name string, t *Table) (withdraw func()) {
	tables.Store(name, t)
	return func() { tables.CompareAndDelete(name, t) }
}

func lookup(name string) *Table {
	t, _ := tables.Load(name)
	tt, _ := t.(*Table)
	return tt
}

// fileSource polls a file.
type fileSource struct {
	path     string
	interval time.Duration
}

// FileSource returns a Source that reads path now and again whenever its
// size or modification time changes, checking every interval (clamped to
// 100ms..1m; 0 means 2s). A missing file counts as an empty document.
func FileSource(path string, interval time.Duration) Source {
	if interval == 0 {
		interval = 2 * time.Second
	}
	return &fileSource{path: path, interval: min(max(interval, 100*time.Millisecond), time.Minute)}
}

func (s *fileSource) Watch(ctx context.Context, apply func([]byte)) error {
	var seen os.FileInfo
	missing := false
	check := func() {
		fi, err := os.Stat(s.path)
		if errors.Is(err, os.ErrNotExist) {
			if !missing {
				missing, seen = true, nil
				apply(nil)
			}
			return
		}
		if err != nil || (seen != nil && fi.Size() == seen.Size() && fi.ModTime().Equal(seen.ModTime())) {
			return
		}
		doc, err := readBounded(s.path)
		if err != nil {
			return
		}
		missing, seen = false, fi
		apply(doc)
	}
	check()
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			check()
		}
	}
}

// readBounded reads at most MaxDocumentSize+1 bytes, so Parse rejects a
// larger file instead of the reader loading it.
func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path) //nolint:gosec // the operator names the file
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	return io.ReadAll(io.LimitReader(f, MaxDocumentSize+1))
}
