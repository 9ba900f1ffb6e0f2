package authz_test

import (
	"context"
	"fmt"

	"github.com/switchboard-rpc/switchboard/kit/authz"
	"github.com/switchboard-rpc/switchboard/kit/identity"
	"github.com/switchboard-rpc/switchboard/kit/server"
	"github.com/switchboard-rpc/switchboard/kit/status"
)

func Example() {
	p, err := authz.Parse([]byte(`
service: switchboard.inventory.v1.InventoryService
methods:
  GetItem:   {services: [order], roles: ["*"]}
  ListItems: {public: true}
  Reserve:   {services: [order]}
`))
	if err != nil {
		panic(err)
	}
	a, err := authz.New(p) // server.WithAuthorizer(a.Authorize)
	if err != nil {
		panic(err)
	}
	gateway := identity.WithService(context.Background(), &identity.Service{Name: "gateway"})
	user := identity.WithUser(gateway, &identity.User{ID: "u-1", Roles: []string{"customer"}})
	for _, c := range []struct {
		ctx    context.Context
		method string
	}{
		{gateway, "/switchboard.inventory.v1.InventoryService/ListItems"},
		{gateway, "/switchboard.inventory.v1.InventoryService/GetItem"},
		{user, "/switchboard.inventory.v1.InventoryService/GetItem"},
		{user, "/switchboard.inventory.v1.InventoryService/Reserve"},
		{user, "/switchboard.inventory.v1.InventoryService/Subscribe"},
	} {
		err := a.Authorize(c.ctx, server.Call{FullMethod: c.method})
		fmt.Printf("%s %s: %q\n", identity.Describe(c.ctx), c.method, status.Reason(err))
	}
	// Output:
	// gateway /switchboard.inventory.v1.InventoryService/ListItems: ""
	// gateway /switchboard.inventory.v1.InventoryService/GetItem: "USER_REQUIRED"
	// user:u-1 via gateway /switchboard.inventory.v1.InventoryService/GetItem: ""
	// user:u-1 via gateway /switchboard.inventory.v1.InventoryService/Reserve: "METHOD_NOT_ALLOWED"
	// user:u-1 via gateway /switchboard.inventory.v1.InventoryService/Subscribe: "METHOD_UNKNOWN"
}
