// Command client calls the Greeter with the kit's client: mutual TLS
// checking the server is really "greeter", a deadline, retries of the
// idempotent SayHello, a circuit breaker, and errors read with their
// details. Run it against examples/greeter/server or switchboard up:
//
//	go run ./examples/greeter/client -certs var/certs -addr 127.0.0.1:7000 -name Ada
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/kit/certs"
	"github.com/switchboard-rpc/switchboard/kit/client"
	"github.com/switchboard-rpc/switchboard/kit/status"
)

func main() {
	dir := flag.String("certs", "var/certs", "directory of the development PKI")
	addr := flag.String("addr", "127.0.0.1:7000", "greeter address")
	name := flag.String("name", "world", "who to greet")
	flag.Parse()
	if err := run(*dir, *addr, *name); err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
}

func run(dir, addr, name string) error {
	// People and tools call as "operator".
	src, err := certs.NewSource(certs.FilesIn(dir, certs.OperatorName))
	if err != nil {
		return err
	}
	conn, err := client.Dial("dns:///"+addr,
		client.WithCredentials(certs.ClientCredentials(src, "greeter")),
		client.WithIdempotentMethods(greeterv1.Greeter_SayHello_FullMethodName),
	)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := greeterv1.NewGreeterClient(conn).SayHello(ctx, &greeterv1.SayHelloRequest{Name: name})
	if err != nil {
		// The details say what to fix: which field, and why.
		for _, v := range status.BadRequest(err).GetFieldViolations() {
			fmt.Fprintf(os.Stderr, "  %s: %s\n", v.GetField(), v.GetDescription())
		}
		return err
	}
	fmt.Println(resp.GetMessage())
	return nil
}
