package auth_test

import (
	"testing"

	"github.com/switchboard-rpc/switchboard/kit/auth"
	"github.com/switchboard-rpc/switchboard/kit/auth/revocation"
)

// BenchmarkVerify measures Verify of a valid token with an in-process
// revocation store: bare checks the signature and claims every time (no
// cache), cached finds the token in the cache after the first call.
func BenchmarkVerify(b *testing.B) {
	for _, bc := range []struct {
		name  string
		cache int
	}{
		{"bare", 0},
		{"cached", auth.DefaultCacheSize},
	} {
		b.Run(bc.name, func(b *testing.B) {
			f := newFixture(b, auth.WithCacheSize(bc.cache), auth.WithRevocations(revocation.NewMemory(0)))
			tok, _ := issue(b, f.issuer, "user-1", "customer")
			ctx := b.Context()
			if _, err := f.verifier.Verify(ctx, tok); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f.verifier.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("cached-parallel", func(b *testing.B) {
		f := newFixture(b, auth.WithRevocations(revocation.NewMemory(0)))
		toks := make([]string, 64)
		for i := range toks {
			toks[i], _ = issue(b, f.issuer, "user-1", "customer")
		}
		ctx := b.Context()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, err := f.verifier.Verify(ctx, toks[i%len(toks)]); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
}
