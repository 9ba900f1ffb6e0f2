package authz

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"gopkg.in/yaml.v3"
)

// Names with a meaning of their own in policies.
const (
	// AnyMethod, as a method key, is the rule of every method of the
	// service that has no rule of its own.
	AnyMethod = "*"
	// AnyUser, in a rule's roles, admits any verified user, whatever roles
	// the user has.
	AnyUser = "*"
	// Operator is the service name of the operator certificate that people
	// use with grpcurl and other tools. It has no implicit rights except
	// server reflection; policies list it where they want it.
	Operator = "operator"
)

// Policy says who may call each method of one gRPC service.
type Policy struct {
	// Service is the full name of the service, for example
	// "switchboard.inventory.v1.InventoryService".
	Service string `yaml:"service"`
	// Methods maps a method's short name (for example "GetItem"), or
	// AnyMethod, to its rule. A method of the service with no rule and no
	// AnyMethod rule is denied to everyone.
	Methods map[string]Rule `yaml:"methods"`
}

// Rule says who may call a method. The zero Rule denies every caller.
// A call from a verified calling service is allowed when the rule is
// public, or its service is listed in Services, or it carries a verified
// user with one of Roles; see the package documentation.
type Rule struct {
	// Services lists the names of the calling services allowed
	// (identity.Service.Name, from the mTLS certificate), with or without
	// a user.
	Services []string `yaml:"services,omitempty"`
	// Roles lists the user roles allowed, through any calling service;
	// AnyUser ("*") allows any verified user.
	Roles []string `yaml:"roles,omitempty"`
	// Public allows every verified calling service, with or without a
	// user. A public rule lists neither services nor roles.
	Public bool `yaml:"public,omitempty"`
}

// Parse reads a policy from one YAML document. Unknown keys, duplicate
// keys and further documents are errors; the policy itself is checked by
// New.
func Parse(data []byte) (Policy, error) {
	p, err := parse(data)
	if err != nil {
		return Policy{}, fmt.Errorf("authz: parse policy: %w", err)
	}
	return p, nil
}

// Load reads a policy from the YAML file at path, as Parse does.
func Load(path string) (Policy, error) {
	data, err := os.ReadFile(path) //nolint:gosec // the path comes from the operator's configuration
	if err != nil {
		return Policy{}, fmt.Errorf("authz: load policy: %w", err)
	}
	p, err := parse(data)
	if err != nil {
		return Policy{}, fmt.Errorf("authz: load policy %s: %w", path, err)
	}
	return p, nil
}

func parse(data []byte) (Policy, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var p Policy
	if err := dec.Decode(&p); err != nil {
		if errors.Is(err, io.EOF) {
			return Policy{}, errors.New("empty document")
		}
		return Policy{}, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return Policy{}, errors.New("more than one YAML document: give each service a policy of its own")
	}
	return p, nil
}
