package auth

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

const (
	pemPrivateKey    = "PRIVATE KEY"
	pemRetiredHeader = "Retired"
)

// loadKeyFile reads the keys of an Issuer from the PEM file at path, oldest
// first. It returns nil and no error when the file does not exist. A key
// before the last one without a Retired header counts as retired at now.
func loadKeyFile(path string, now time.Time) ([]signingKey, error) {
	data, err := os.ReadFile(filepath.Clean(path)) //nolint:gosec // the path is the operator's configuration
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var keys []signingKey
	seen := make(map[string]bool)
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			if len(bytes.TrimSpace(rest)) != 0 {
				return nil, fmt.Errorf("%s: data that is not a PEM block after key %d", path, len(keys))
			}
			break
		}
		if block.Type != pemPrivateKey {
			return nil, fmt.Errorf("%s: block %d is a %q, want %q", path, len(keys)+1, block.Type, pemPrivateKey)
		}
		parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: block %d: %w", path, len(keys)+1, err)
		}
		priv, ok := parsed.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s: block %d is a %T, want an Ed25519 key", path, len(keys)+1, parsed)
		}
		key := keyFromPrivate(priv)
		if seen[key.kid] {
			return nil, fmt.Errorf("%s: key %s appears twice", path, key.kid)
		}
		seen[key.kid] = true
		key.retired = now
		if h, ok := block.Headers[pemRetiredHeader]; ok {
			if key.retired, err = time.Parse(time.RFC3339Nano, h); err != nil {
				return nil, fmt.Errorf("%s: block %d: bad %s header: %w", path, len(keys)+1, pemRetiredHeader, err)
			}
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no key in the file", path)
	}
	keys[len(keys)-1].retired = time.Time{}
	return keys, nil
}

// saveKeyFile writes keys to path atomically (a temporary file in the same
// directory renamed over it), readable by the owner only.
func saveKeyFile(path string, keys []signingKey) (err error) {
	var buf bytes.Buffer
	for _, k := range keys {
		der, err := x509.MarshalPKCS8PrivateKey(k.private)
		if err != nil {
			return err
		}
		block := &pem.Block{Type: pemPrivateKey, Bytes: der}
		if !k.retired.IsZero() {
			block.Headers = map[string]string{pemRetiredHeader: k.retired.UTC().Format(time.RFC3339Nano)}
		}
		if err := pem.Encode(&buf, block); err != nil {
			return err
		}
	}
	dir, name := filepath.Split(filepath.Clean(path))
	tmp, err := os.CreateTemp(dir, "."+name+".*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
