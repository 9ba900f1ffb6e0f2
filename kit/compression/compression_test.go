package compression

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"google.golang.org/grpc/encoding"
)

func TestRegistered(t *testing.T) {
	for _, name := range []string{Gzip, Zstd} {
		if encoding.GetCompressor(name) == nil {
			t.Errorf("GetCompressor(%q) = nil, want a registered compressor", name)
		}
	}
}

func TestZstdRoundTrip(t *testing.T) {
	c := encoding.GetCompressor(Zstd)
	tests := []string{"", "hello", strings.Repeat("switchboard ", 100000)}
	for i := 0; i < 3; i++ { // again, through the pools
		for _, in := range tests {
			var buf bytes.Buffer
			w, err := c.Compress(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write([]byte(in)); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if len(in) > 1000 && buf.Len() >= len(in)/10 {
				t.Errorf("compressed %d bytes to %d, want at least 10x smaller", len(in), buf.Len())
			}
			r, err := c.Decompress(&buf)
			if err != nil {
				t.Fatal(err)
			}
			out, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != in {
				t.Errorf("round trip of %d bytes gave %d bytes", len(in), len(out))
			}
		}
	}
}

func TestZstdRejectsGarbage(t *testing.T) {
	r, err := encoding.GetCompressor(Zstd).Decompress(strings.NewReader("not zstd at all"))
	if err == nil {
		_, err = io.ReadAll(r)
	}
	if err == nil {
		t.Error("decompressing garbage succeeded, want an error")
	}
}
