package main

import "fmt"

// errBadFlag reports a setting with a value out of its range.
func errBadFlag(name, value, want string) error {
	return fmt.Errorf("invalid %s %q: want %s", name, value, want)
}
