// Package authz decides, per method, which callers may make a call: one
// declarative [Policy] per service, deny by default. It plugs into
// kit/server as its Authorizer hook:
//
//	inv, err := authz.Load("services/inventory/policy.yaml")
//	...
//	a, err := authz.New(inv)
//	...
//	srv, err := server.New(server.WithAuthorizer(a.Authorize), ...)
//
// # Policies
//
// A policy names a service and gives a [Rule] per method. In YAML:
//
//	service: switchboard.inventory.v1.InventoryService
//	methods:
//	  GetItem:   {services: [gateway, order], roles: ["*"]}
//	  ListItems: {public: true}
//	  Reserve:   {services: [order]}
//	  "*":       {services: [operator]}
//
// and the same in Go:
//
//	authz.Policy{
//		Service: "switchboard.inventory.v1.InventoryService",
//		Methods: map[string]authz.Rule{
//			"GetItem":   {Services: []string{"gateway", "order"}, Roles: []string{authz.AnyUser}},
//			"ListItems": {Public: true},
//			"Reserve":   {Services: []string{"order"}},
//			authz.AnyMethod: {Services: []string{authz.Operator}},
//		},
//	}
//
// Method keys are the short method names of the service; "*" ([AnyMethod])
// is the rule of every method of the service without a rule of its own. A
// method's own rule replaces the "*" rule: the two are not merged, so a
// method can be made stricter than the default, and {} denies every caller.
//
// # Who is allowed
//
// The caller is read from the context with identity.ServiceFrom and
// identity.UserFrom. A call is allowed when it comes from a verified
// calling service (its mTLS certificate) and
//
//   - the rule is public (any calling service, with or without a user); or
//   - the calling service's name is listed in services; or
//   - the call carries a verified user who has one of the roles listed in
//     roles, whichever service it came through; "*" ([AnyUser]) in roles
//     admits any verified user, even one without roles.
//
// Services and roles are alternatives, not both required: service-to-
// service calls carry no user (order reserves stock for a saga, not for a
// person), while end-user calls arrive through the gateway or another
// service that forwards the user's access token, which every service
// verifies for itself, so a service cannot make up a user. Listing a
// service therefore admits all its calls, with or without a user: list
// the gateway only where anonymous end users may call, and use roles
// where a signed-in user is needed. A call without a verified calling
// service is always denied, public rules included: on a deployment every
// hop is mTLS, so its absence means the server is misconfigured.
//
// The operator certificate, which people use with grpcurl, is an ordinary
// service identity named "operator" ([Operator]); it has no implicit
// rights and is listed explicitly where wanted.
//
// # Health and reflection
//
// grpc.health.v1 never reaches the authorizer: kit/server skips the hooks
// for it, since probes and balancers carry no credentials. Server
// reflection (methods under /grpc.reflection.) describes every served
// API and is allowed for the operator service only; [WithReflection]
// replaces that rule. A policy for a reflection service itself (its
// descriptor registered) takes precedence over both.
//
// # Errors
//
// Denials are PERMISSION_DENIED errors with an ErrorInfo in domain
// status.KitDomain whose metadata names the method, and one of these
// reasons:
//
//   - [ReasonServiceRequired] (SERVICE_REQUIRED): the call has no verified
//     calling service;
//   - [ReasonMethodUnknown] (METHOD_UNKNOWN): no policy has a rule for the
//     method;
//   - [ReasonUserRequired] (USER_REQUIRED): the calling service is not
//     listed, the rule lists roles, and the call carries no verified user;
//   - [ReasonMethodNotAllowed] (METHOD_NOT_ALLOWED): the calling service is
//     not listed and the user, if any, has none of the listed roles.
//
// # Validation
//
// [New] checks every policy against the service descriptors registered in
// protoregistry (import the generated package of the service): the service
// must exist, every method named must exist in it, and rules must be well
// formed. A mistake in a policy is a start-up error, never a silent deny or
// allow at run time. [Parse] and [Load] read YAML strictly: an unknown key
// is an error.
//
// An [Authorizer] is immutable once built and safe for concurrent use.
// Authorize costs one map lookup by full method and does not allocate when
// it allows the call.
package authz
