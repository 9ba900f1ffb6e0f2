package server

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/switchboard-rpc/switchboard/kit/requestid"
	"github.com/switchboard-rpc/switchboard/kit/status"
	"github.com/switchboard-rpc/switchboard/kit/telemetry"
)

// Reasons of the errors the chain itself raises, in ErrorInfo with domain
// status.KitDomain.
const (
	ReasonPanic             = "INTERNAL"
	ReasonStreamIdle        = "STREAM_IDLE"
	ReasonStreamMaxLifetime = "STREAM_MAX_LIFETIME"
	ReasonUnauthenticated   = "UNAUTHENTICATED"
	ReasonPermissionDenied  = "PERMISSION_DENIED"
	ReasonRateLimited       = "RATE_LIMITED"
)

// chain holds the kit's interceptors; see the package documentation for the
// order and the reasons for it.
type chain struct {
	opts   *options
	access *telemetry.AccessLogger // nil without a logger
}

// unaryEntry is the kit's unary interceptor: the request id, the access
// log, then the rest of the chain (unary).
func (c *chain) unaryEntry(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	id := requestid.FromIncoming(ctx)
	ctx = requestid.NewContext(ctx, id)
	start := time.Now()
	resp, err := c.unary(ctx, req, info, handler)
	if c.access != nil {
		c.access.Log(ctx, info.FullMethod, false, start, err)
	}
	if err != nil {
		// Failed calls carry the id back, in the trailer: a header would
		// commit the call and stop grpc's transparent retries.
		_ = grpc.SetTrailer(ctx, metadata.MD{requestid.Header: {id}})
	}
	return resp, err
}

// streamEntry is the kit's stream interceptor: the request id, the access
// log, then the rest of the chain (stream).
func (c *chain) streamEntry(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := ss.Context()
	id := requestid.FromIncoming(ctx)
	ctx = requestid.NewContext(ctx, id)
	start := time.Now()
	err := c.stream(ctx, srv, ss, info, handler)
	if c.access != nil {
		c.access.Log(ctx, info.FullMethod, true, start, err)
	}
	if err != nil {
		ss.SetTrailer(metadata.MD{requestid.Header: {id}})
	}
	return err
}

// unary runs recovery, the deadline policy, authentication, authorization,
// the rate limit and validation, then the handler.
func (c *chain) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, c.recovered(ctx, info.FullMethod, r)
		}
	}()
	if d, ok := c.deadline(ctx, info.FullMethod); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d)
		defer cancel()
	}
	if ctx, err = c.admit(ctx, Call{FullMethod: info.FullMethod}); err != nil {
		return nil, err
	}
	if v := c.opts.validator; v != nil {
		if err := v.Check(req); err != nil {
			return nil, err
		}
	}
	return handler(ctx, req)
}

// deadline returns the deadline the policy imposes on a unary call, if it
// changes the one the call has.
func (c *chain) deadline(ctx context.Context, method string) (time.Time, bool) {
	pol := c.opts.deadlines
	if m, ok := c.opts.perMethod[method]; ok {
		pol = m
	}
	have, ok := ctx.Deadline()
	switch {
	case !ok && pol.Default > 0:
		return time.Now().Add(pol.Default), true
	case pol.Max > 0:
		if limit := time.Now().Add(pol.Max); !ok || have.After(limit) {
			return limit, true
		}
	}
	return time.Time{}, false
}

// healthPrefix names the grpc.health.v1 methods, which skip the hooks:
// load balancers, Kubernetes probes and client-side health checks carry no
// user credentials, and health reveals nothing.
const healthPrefix = "/grpc.health.v1.Health/"

// admit runs the authentication, authorization and rate limit hooks.
func (c *chain) admit(ctx context.Context, call Call) (context.Context, error) {
	o := c.opts
	if strings.HasPrefix(call.FullMethod, healthPrefix) {
		return ctx, nil
	}
	if o.authn != nil {
		next, err := o.authn(ctx, call)
		if err != nil {
			return ctx, asStatus(err, codes.Unauthenticated, ReasonUnauthenticated, "authentication failed")
		}
		ctx = next
	}
	if o.authz != nil {
		if err := o.authz(ctx, call); err != nil {
			return ctx, asStatus(err, codes.PermissionDenied, ReasonPermissionDenied, "permission denied")
		}
	}
	if o.limiter != nil {
		if err := o.limiter(ctx, call); err != nil {
			return ctx, asStatus(err, codes.ResourceExhausted, ReasonRateLimited, "rate limit exceeded")
		}
	}
	return ctx, nil
}

// asStatus passes status errors through and replaces any other error with a
// generic one of the given code, so a hook cannot leak internals.
func asStatus(err error, code codes.Code, reason, msg string) error {
	if _, ok := grpcstatus.FromError(err); ok {
		return err
	}
	return status.Error(code, status.KitDomain, reason, msg)
}

func (c *chain) recovered(ctx context.Context, method string, r any) error {
	c.opts.logger.LogAttrs(ctx, slog.LevelError, "panic in handler",
		slog.String("method", method),
		slog.String("request_id", requestid.FromContext(ctx)),
		slog.String("panic", fmt.Sprint(r)),
		slog.String("stack", string(debug.Stack())))
	return status.Internal(status.KitDomain)
}

// stream bounds the stream's idle time and lifetime, then runs the rest of
// the chain with ctx as the stream's context.
func (c *chain) stream(ctx context.Context, srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	call := Call{FullMethod: info.FullMethod, ClientStream: info.IsClientStream, ServerStream: info.IsServerStream}
	w := &serverStream{ServerStream: ss, ctx: ctx}
	if c.opts.validator != nil {
		w.validator = c.opts.validator
	}
	lim := c.opts.streams
	if lim.Idle <= 0 && lim.MaxLifetime <= 0 {
		return c.runStream(srv, w, call, handler)
	}

	// The handler runs in a goroutine of its own so that a stream stuck in
	// Recv or Send can still be ended: returning here makes grpc finish the
	// stream, which unblocks the handler. From here on w belongs to that
	// goroutine; this one only reads the clock.
	clock := &streamClock{start: time.Now()}
	w.clock = clock
	ctx, cancel := context.WithCancelCause(w.ctx)
	defer cancel(nil)
	w.ctx = ctx
	done := make(chan error, 1)
	go func() { done <- c.runStream(srv, w, call, handler) }()

	// Idleness is checked a quarter of the idle timeout apart, against a
	// count of messages the stream bumps without reading a clock: a
	// stream ends at most a quarter of its timeout late.
	var idle, life <-chan time.Time
	var seen uint64
	lastActive := clock.start
	if lim.Idle > 0 {
		t := time.NewTicker(max(lim.Idle/4, time.Millisecond))
		defer t.Stop()
		idle = t.C
	}
	if lim.MaxLifetime > 0 {
		t := time.NewTimer(lim.MaxLifetime)
		defer t.Stop()
		life = t.C
	}
	for {
		select {
		case err := <-done:
			return err
		case <-life:
			return clock.end(cancel, status.Error(codes.DeadlineExceeded, status.KitDomain, ReasonStreamMaxLifetime,
				fmt.Sprintf("stream reached its maximum lifetime of %s", lim.MaxLifetime)))
		case now := <-idle:
			if n := clock.messages.Load(); n != seen {
				seen, lastActive = n, now
				continue
			}
			if now.Sub(lastActive) < lim.Idle {
				continue
			}
			return clock.end(cancel, status.Error(codes.DeadlineExceeded, status.KitDomain, ReasonStreamIdle,
				fmt.Sprintf("stream idle for more than %s", lim.Idle)))
		}
	}
}

// runStream runs recovery, authentication, authorization and the rate limit
// once, then the handler with validation of every received message.
func (c *chain) runStream(srv any, w *serverStream, call Call, handler grpc.StreamHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = c.recovered(w.ctx, call.FullMethod, r)
		}
	}()
	ctx, err := c.admit(w.ctx, call)
	if err != nil {
		return err
	}
	w.ctx = ctx
	return handler(srv, w)
}

// serverStream is the wrapper the chain puts around a stream: it carries
// the context the chain built, validates received messages and records
// activity for the idle timeout. It is used by one goroutine at a time, as
// grpc streams are.
type serverStream struct {
	grpc.ServerStream
	ctx       context.Context
	validator interface{ Check(any) error }
	clock     *streamClock // nil when streams have no limits
}

func (w *serverStream) Context() context.Context { return w.ctx }

func (w *serverStream) SendMsg(m any) error {
	if w.clock != nil {
		if err := w.clock.ended.Load(); err != nil {
			return *err
		}
	}
	if err := w.ServerStream.SendMsg(m); err != nil {
		return err
	}
	if w.clock != nil {
		w.clock.touch()
	}
	return nil
}

func (w *serverStream) RecvMsg(m any) error {
	if w.clock != nil {
		if err := w.clock.ended.Load(); err != nil {
			return *err
		}
	}
	if err := w.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if w.clock != nil {
		w.clock.touch()
	}
	if w.validator != nil {
		return w.validator.Check(m)
	}
	return nil
}

// streamClock is shared by a stream's handler goroutine, which records
// activity, and the goroutine that watches its limits.
type streamClock struct {
	start    time.Time
	messages atomic.Uint64 // messages sent and received so far
	ended    atomic.Pointer[error]
}

// touch records a message sent or received.
func (c *streamClock) touch() { c.messages.Add(1) }

// end stops the stream with err: the handler's context is cancelled with
// err as its cause and its later Send and Recv calls fail with err.
func (c *streamClock) end(cancel context.CancelCauseFunc, err error) error {
	c.ended.Store(&err)
	cancel(err)
	return err
}
