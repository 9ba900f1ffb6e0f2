package authz

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/switchboard-rpc/switchboard/kit/identity"
	"github.com/switchboard-rpc/switchboard/kit/server"
	"github.com/switchboard-rpc/switchboard/kit/status"
)

// Reasons in the ErrorInfo (domain status.KitDomain) of the
// PERMISSION_DENIED errors Authorize returns.
const (
	// ReasonServiceRequired: the call has no verified calling service.
	ReasonServiceRequired = "SERVICE_REQUIRED"
	// ReasonMethodUnknown: no policy has a rule for the method.
	ReasonMethodUnknown = "METHOD_UNKNOWN"
	// ReasonUserRequired: the calling service is not listed, the rule
	// lists roles, and the call carries no verified user.
	ReasonUserRequired = "USER_REQUIRED"
	// ReasonMethodNotAllowed: the calling service is not listed, and the
	// user, if any, has none of the roles listed.
	ReasonMethodNotAllowed = "METHOD_NOT_ALLOWED"
)

// reflectionPrefix starts the full names of the server reflection methods
// (grpc.reflection.v1 and v1alpha).
const reflectionPrefix = "/grpc.reflection."

// reflectionMethods are the server reflection methods grpc-go serves.
var reflectionMethods = []string{
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
}

// Option configures an Authorizer.
type Option func(*options)

type options struct {
	policies   []Policy
	reflection Rule
	files      *protoregistry.Files
}

// WithPolicies adds the policies of further services, for a process that
// serves several. Each service may have one policy only.
func WithPolicies(ps ...Policy) Option {
	return func(o *options) { o.policies = append(o.policies, ps...) }
}

// WithReflection sets the rule for server reflection (methods under
// /grpc.reflection.), which by default allows the Operator service only.
// A policy for a reflection service takes precedence.
func WithReflection(r Rule) Option {
	return func(o *options) { o.reflection = r }
}

// WithFiles sets the registry policies are checked against (default
// protoregistry.GlobalFiles, which generated packages register with).
func WithFiles(f *protoregistry.Files) Option {
	return func(o *options) { o.files = f }
}

// Authorizer decides calls by the policies it was built with. It is
// immutable and safe for concurrent use.
type Authorizer struct {
	rules      map[string]*rule // by full method: "/package.Service/Method"
	reflection *rule
	services   []string
}

// Its Authorize method is a kit/server Authorizer.
var _ server.Authorizer = (*Authorizer)(nil).Authorize

// rule is a Rule compiled for Authorize.
type rule struct {
	public   bool
	anyUser  bool
	services []string
	roles    []string
}

// New builds an Authorizer from p and the policies of WithPolicies. It
// checks every policy against the registered service descriptors and
// returns all the mistakes it finds: a service that is not registered or
// has two policies, a method the service does not have, a malformed rule.
func New(p Policy, opts ...Option) (*Authorizer, error) {
	o := options{
		reflection: Rule{Services: []string{Operator}},
		files:      protoregistry.GlobalFiles,
	}
	for _, opt := range opts {
		opt(&o)
	}
	a := &Authorizer{rules: make(map[string]*rule)}
	var errs []error
	for _, pol := range append([]Policy{p}, o.policies...) {
		errs = append(errs, a.add(o.files, pol)...)
	}
	refl, err := compile(o.reflection)
	if err != nil {
		errs = append(errs, fmt.Errorf("authz: reflection rule: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	a.reflection = refl
	for _, m := range reflectionMethods {
		if _, ok := a.rules[m]; !ok {
			a.rules[m] = refl
		}
	}
	sort.Strings(a.services)
	return a, nil
}

// add checks p and adds a rule for every method of its service that p
// covers.
func (a *Authorizer) add(files *protoregistry.Files, p Policy) []error {
	if p.Service == "" {
		return []error{errors.New("authz: policy without a service name")}
	}
	prefix := "authz: policy for " + p.Service + ": "
	if slices.Contains(a.services, p.Service) {
		return []error{errors.New(prefix + "more than one policy for the service")}
	}
	a.services = append(a.services, p.Service)
	d, err := files.FindDescriptorByName(protoreflect.FullName(p.Service))
	if err != nil {
		return []error{fmt.Errorf("%sno such service registered (is its generated package imported?): %w", prefix, err)}
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return []error{errors.New(prefix + "not a service")}
	}
	if len(p.Methods) == 0 {
		return []error{errors.New(prefix + "no methods: every call would be denied")}
	}
	var errs []error
	compiled := make(map[string]*rule, len(p.Methods))
	names := make([]string, 0, len(p.Methods))
	for name := range p.Methods {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if name != AnyMethod && sd.Methods().ByName(protoreflect.Name(name)) == nil {
			errs = append(errs, fmt.Errorf("%sno method %q in the service (methods are named without the service, as in \"GetItem\")", prefix, name))
			continue
		}
		r, err := compile(p.Methods[name])
		if err != nil {
			errs = append(errs, fmt.Errorf("%smethod %s: %w", prefix, name, err))
			continue
		}
		compiled[name] = r
	}
	if len(errs) > 0 {
		return errs
	}
	for i := range sd.Methods().Len() {
		name := string(sd.Methods().Get(i).Name())
		r, ok := compiled[name]
		if !ok {
			r, ok = compiled[AnyMethod]
		}
		if ok {
			a.rules["/"+p.Service+"/"+name] = r
		}
	}
	return nil
}

// compile checks r and returns its compiled form.
func compile(r Rule) (*rule, error) {
	if r.Public && (len(r.Services) > 0 || len(r.Roles) > 0) {
		return nil, errors.New("a public rule lists no services or roles: it already allows every calling service")
	}
	c := &rule{public: r.Public}
	for _, s := range r.Services {
		switch {
		case s == "*":
			return nil, errors.New(`"*" in services: write public: true to allow every calling service`)
		case strings.TrimSpace(s) != s || s == "":
			return nil, fmt.Errorf("invalid service name %q", s)
		}
		if !slices.Contains(c.services, s) {
			c.services = append(c.services, s)
		}
	}
	for _, role := range r.Roles {
		switch {
		case role == AnyUser:
			c.anyUser = true
			continue
		case strings.TrimSpace(role) != role || role == "":
			return nil, fmt.Errorf("invalid role %q", role)
		}
		if !slices.Contains(c.roles, role) {
			c.roles = append(c.roles, role)
		}
	}
	if c.anyUser {
		c.roles = nil
	}
	return c, nil
}

// Services returns the names of the services that have a policy, sorted.
// A server can check at start-up that it serves none without one.
func (a *Authorizer) Services() []string { return slices.Clone(a.services) }

// Authorize returns nil when the policy allows the caller in ctx
// (identity.ServiceFrom and identity.UserFrom) to make call, and a
// PERMISSION_DENIED error saying why otherwise. It matches kit/server's
// Authorizer: pass a.Authorize to server.WithAuthorizer.
func (a *Authorizer) Authorize(ctx context.Context, call server.Call) error {
	svc := identity.ServiceFrom(ctx)
	if svc == nil || svc.Name == "" {
		return denied(ReasonServiceRequired, call.FullMethod,
			"no verified calling service: every call needs a service certificate")
	}
	r, ok := a.rules[call.FullMethod]
	if !ok {
		if !strings.HasPrefix(call.FullMethod, reflectionPrefix) {
			return denied(ReasonMethodUnknown, call.FullMethod,
				fmt.Sprintf("no authorization rule for %s", call.FullMethod))
		}
		r = a.reflection
	}
	if r.public || slices.Contains(r.services, svc.Name) {
		return nil
	}
	if !r.anyUser && len(r.roles) == 0 {
		return denied(ReasonMethodNotAllowed, call.FullMethod,
			fmt.Sprintf("service %q may not call %s", svc.Name, call.FullMethod))
	}
	u := identity.UserFrom(ctx)
	if u == nil {
		return denied(ReasonUserRequired, call.FullMethod,
			fmt.Sprintf("%s needs a signed-in user when called by service %q", call.FullMethod, svc.Name))
	}
	if r.anyUser {
		return nil
	}
	for _, role := range r.roles {
		if u.HasRole(role) {
			return nil
		}
	}
	return denied(ReasonMethodNotAllowed, call.FullMethod,
		fmt.Sprintf("the user has no role that may call %s", call.FullMethod))
}

// denied returns a PERMISSION_DENIED error with reason, naming the method
// in the ErrorInfo metadata.
func denied(reason, method, msg string) error {
	return status.Error(codes.PermissionDenied, status.KitDomain, reason, msg,
		&errdetails.ErrorInfo{Metadata: map[string]string{"method": method}})
}
