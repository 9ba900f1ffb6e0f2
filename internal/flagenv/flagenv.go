// Package flagenv fills a command's flags from SWITCHBOARD_* environment
// variables and an optional YAML file, so every setting of the binary can
// be given in the way that suits where it runs: flags on a laptop,
// environment variables in a container, a file in a ConfigMap.
//
// Precedence, highest first: a flag set on the command line, the
// environment variable, the YAML file, the flag's default. The variable of
// flag "base-port" is SWITCHBOARD_BASE_PORT; its YAML key is "base-port".
package flagenv

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// Prefix starts every environment variable name.
const Prefix = "SWITCHBOARD_"

// MaxFileSize bounds the YAML file.
const MaxFileSize = 1 << 20

// EnvName returns the environment variable for a flag name.
func EnvName(flag string) string {
	return Prefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// Apply sets every flag of fs not given on the command line from the
// environment (via lookup, normally os.LookupEnv) or, failing that, from
// the YAML file at path (skipped when path is empty). Unknown keys in the
// file are an error, so a typo does not pass silently.
func Apply(fs *pflag.FlagSet, path string, lookup func(string) (string, bool)) error {
	fromFile := map[string]string{}
	if path != "" {
		var err error
		if fromFile, err = readFile(path); err != nil {
			return err
		}
		var unknown []string
		for k := range fromFile {
			if fs.Lookup(k) == nil {
				unknown = append(unknown, k)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			return fmt.Errorf("config %s: unknown settings %s", path, strings.Join(unknown, ", "))
		}
	}
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			return
		}
		v, ok := lookup(EnvName(f.Name))
		source := "environment variable " + EnvName(f.Name)
		if !ok {
			v, ok = fromFile[f.Name]
			source = "config " + path + " key " + f.Name
		}
		if !ok {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", source, err))
		}
	})
	return errors.Join(errs...)
}

func readFile(path string) (map[string]string, error) {
	f, err := os.Open(path) //nolint:gosec // the operator names the file
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer func() { _ = f.Close() }()
	buf, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if len(buf) > MaxFileSize {
		return nil, fmt.Errorf("config %s: larger than %d bytes", path, MaxFileSize)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(buf, &raw); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		switch v := v.(type) {
		case []any:
			parts := make([]string, len(v))
			for i, p := range v {
				parts[i] = fmt.Sprint(p)
			}
			out[k] = strings.Join(parts, ",")
		case map[string]any:
			return nil, fmt.Errorf("config %s: %s: nested settings are not supported", path, k)
		default:
			out[k] = fmt.Sprint(v)
		}
	}
	return out, nil
}
