// Package greeter is the smallest service built on the kit, and the first
// thing to read: one handler per RPC kind of switchboard.greeter.v1.Greeter
// and the validation rules of its requests. cmd/switchboard serves it, and
// kit tests and benchmarks use it as their real service.
package greeter

import (
	"context"
	"errors"
	"io"
	"strings"

	greeterv1 "github.com/switchboard-rpc/switchboard/gen/switchboard/greeter/v1"
	"github.com/switchboard-rpc/switchboard/kit/authz"
	"github.com/switchboard-rpc/switchboard/kit/validate"
)

// Limits of the requests, enforced by Rules.
const (
	MaxNameLen     = 100
	MaxCount       = 1_000_000
	MaxPadding     = 1 << 20
	MaxNamesPerRun = 10_000
)

// Service implements greeterv1.GreeterServer. The zero value is ready to
// use and safe for concurrent use.
type Service struct {
	greeterv1.UnimplementedGreeterServer
}

var _ greeterv1.GreeterServer = (*Service)(nil)

// Rules adds the validation rules of the Greeter's requests to s.
func Rules(s *validate.Set) {
	validate.Rule(s, func(m *greeterv1.SayHelloRequest, v *validate.Violations) {
		v.Length("name", m.GetName(), 1, MaxNameLen)
	})
	validate.Rule(s, func(m *greeterv1.StreamGreetingsRequest, v *validate.Violations) {
		v.Length("name", m.GetName(), 1, MaxNameLen)
		v.Range("count", int64(m.GetCount()), 1, MaxCount)
		v.Range("padding_bytes", int64(m.GetPaddingBytes()), 0, MaxPadding)
	})
	validate.Rule(s, func(m *greeterv1.CollectNamesRequest, v *validate.Violations) {
		v.Length("name", m.GetName(), 1, MaxNameLen)
	})
	validate.Rule(s, func(m *greeterv1.ChatRequest, v *validate.Violations) {
		v.Length("name", m.GetName(), 1, MaxNameLen)
	})
}

func greeting(name string) string { return "Hello, " + name + "!" }

// SayHello greets one name.
func (*Service) SayHello(_ context.Context, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
	return &greeterv1.SayHelloResponse{Message: greeting(req.GetName())}, nil
}

// StreamGreetings sends the requested number of greetings. Send blocks
// while the client is not reading, so a slow reader slows the loop down
// instead of filling memory.
func (*Service) StreamGreetings(req *greeterv1.StreamGreetingsRequest, stream greeterv1.Greeter_StreamGreetingsServer) error {
	msg := greeting(req.GetName())
	padding := make([]byte, req.GetPaddingBytes())
	resp := &greeterv1.StreamGreetingsResponse{Message: msg, Padding: padding}
	for i := int32(1); i <= req.GetCount(); i++ {
		resp.Sequence = i
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
	return nil
}

// CollectNames greets every name the client sent, once it is done. It
// refuses more than MaxNamesPerRun names.
func (*Service) CollectNames(stream greeterv1.Greeter_CollectNamesServer) error {
	var names []string
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if len(names) == MaxNamesPerRun {
			return errTooManyNames
		}
		names = append(names, req.GetName())
	}
	return stream.SendAndClose(&greeterv1.CollectNamesResponse{
		Message: greeting(strings.Join(names, ", ")),
		Count:   int32(len(names)), //nolint:gosec // bounded by MaxNamesPerRun
	})
}

// Chat greets each name as it arrives.
func (*Service) Chat(stream greeterv1.Greeter_ChatServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&greeterv1.ChatResponse{Message: greeting(req.GetName())}); err != nil {
			return err
		}
	}
}

// Policy is the greeter's authorization policy: any caller with a verified
// service certificate (the operator's included) may be greeted.
func Policy() authz.Policy {
	return authz.Policy{
		Service: greeterv1.Greeter_ServiceDesc.ServiceName,
		Methods: map[string]authz.Rule{authz.AnyMethod: {Public: true}},
	}
}
