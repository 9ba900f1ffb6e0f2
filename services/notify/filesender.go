package notify

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// FileSender writes each message as an RFC 5322 file, <id>.eml, in a
// directory: the default Sender, for development and for tools that pick
// mail up from a directory. A file appears whole or not at all: it is
// written to a temporary file in the same directory, synced, and renamed,
// and the directory is synced.
// Sending a message again replaces its file. It is safe for concurrent
// use.
type FileSender struct {
	dir string
}

var _ Sender = (*FileSender)(nil)

// NewFileSender returns a FileSender writing to dir, which it creates
// (mode 0750) if missing.
func NewFileSender(dir string) (*FileSender, error) {
	if dir == "" {
		return nil, errors.New("notify: empty mail directory")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("notify: mail directory: %w", err)
	}
	return &FileSender{dir: dir}, nil
}

// Dir returns the directory the sender writes to.
func (f *FileSender) Dir() string { return f.dir }

// Path returns the file a message with notification id id is written to.
func (f *FileSender) Path(id string) string { return filepath.Join(f.dir, id+".eml") }

// Send writes m to Path(m.ID), mode 0600. The id must be a plain name
// (letters, digits, '-' and '_'), as notification ids are.
func (f *FileSender) Send(ctx context.Context, m *Mail) (err error) {
	if !plainName(m.ID) {
		return fmt.Errorf("%w: message id %q is not a plain file name", ErrRejected, m.ID)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(f.dir, ".tmp-"+m.ID+"-*")
	if err != nil {
		return fmt.Errorf("write mail file: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(m.Data); err != nil {
		return fmt.Errorf("write mail file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write mail file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write mail file: %w", err)
	}
	if err := os.Rename(tmp.Name(), f.Path(m.ID)); err != nil {
		return fmt.Errorf("write mail file: %w", err)
	}
	// Sync the directory too, so that the rename survives a crash before
	// the notification is marked sent.
	if err := syncDir(f.dir); err != nil {
		return fmt.Errorf("write mail file: %w", err)
	}
	return nil
}

// syncDir flushes a directory's entries to stable storage.
func syncDir(dir string) error {
	d, err := os.Open(dir) //nolint:gosec // the configured mail directory
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// plainName reports whether s is a non-empty name of [A-Za-z0-9_-] of at
// most 128 bytes.
func plainName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}
