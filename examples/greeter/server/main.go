// Command server is the smallest production-shaped gRPC server built on the
// kit: the Greeter behind mutual TLS, with validation, health, reflection,
// metrics and graceful shutdown. Run it after "switchboard certs init":
//
//	go run ./examples/greeter/server -certs var/certs -listen 127.0.0.1:7000
package main

import (
	"context"
	"flag"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/kit/certs"
	"github.com/switchboard-rpc/switchboard/kit/server"
	"github.com/switchboard-rpc/switchboard/kit/validate"
	"github.com/switchboard-rpc/switchboard/services/greeter"
)

func main() {
	dir := flag.String("certs", "var/certs", "directory of the development PKI")
	listen := flag.String("listen", "127.0.0.1:7000", "address to serve on")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(*dir, *listen, log); err != nil {
		log.Error("greeter server failed", "error", err)
		os.Exit(1)
	}
}

func run(dir, listen string, log *slog.Logger) error {
	// The greeter's certificate says it is spiffe://switchboard.local/greeter.
	src, err := certs.NewSource(certs.FilesIn(dir, "greeter"))
	if err != nil {
		return err
	}
	rules := validate.NewSet()
	greeter.Rules(rules)
	srv, err := server.New(
		server.WithCredentials(certs.ServerCredentials(src)),
		server.WithValidator(rules),
		server.WithLogger(log),
	)
	if err != nil {
		return err
	}
	greeterv1.RegisterGreeterServer(srv, &greeter.Service{})

	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx) // NOT_SERVING, drain, then stop
	}()
	return srv.Serve(lis)
}
