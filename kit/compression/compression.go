// Package compression registers the message compressors the kit supports
// with grpc-go: gzip (grpc's own) and zstd (klauspost/compress). Importing
// the package, which kit/server and kit/client do, makes both available to
// servers, and lets a client pick one per call with
// grpc.UseCompressor(compression.Zstd).
//
// Encoders and decoders are pooled; a decoder refuses output above the
// largest message a server accepts, so a small compressed bomb cannot
// exhaust memory.
package compression

import (
	"errors"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/gzip"
)

// Names of the registered compressors, as sent in grpc-encoding.
const (
	Gzip = gzip.Name
	Zstd = "zstd"
)

// MaxDecodedSize bounds what one zstd message may decompress to. grpc also
// enforces the server's receive limit on the decompressed size.
const MaxDecodedSize = 64 << 20

func init() {
	encoding.RegisterCompressor(&zstdCompressor{})
}

type zstdCompressor struct {
	encoders sync.Pool
	decoders sync.Pool
}

// Name implements encoding.Compressor.
func (*zstdCompressor) Name() string { return Zstd }

// Compress implements encoding.Compressor.
func (c *zstdCompressor) Compress(w io.Writer) (io.WriteCloser, error) {
	if enc, ok := c.encoders.Get().(*zstd.Encoder); ok {
		enc.Reset(w)
		return &zstdWriter{Encoder: enc, pool: &c.encoders}, nil
	}
	enc, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, err
	}
	return &zstdWriter{Encoder: enc, pool: &c.encoders}, nil
}

// Decompress implements encoding.Compressor.
func (c *zstdCompressor) Decompress(r io.Reader) (io.Reader, error) {
	if dec, ok := c.decoders.Get().(*zstd.Decoder); ok {
		if err := dec.Reset(r); err != nil {
			return nil, err
		}
		return &zstdReader{Decoder: dec, pool: &c.decoders}, nil
	}
	dec, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxDecodedSize), zstd.WithDecoderLowmem(true))
	if err != nil {
		return nil, err
	}
	return &zstdReader{Decoder: dec, pool: &c.decoders}, nil
}

type zstdWriter struct {
	*zstd.Encoder
	pool *sync.Pool
}

func (w *zstdWriter) Close() error {
	err := w.Encoder.Close()
	w.pool.Put(w.Encoder)
	return err
}

type zstdReader struct {
	*zstd.Decoder
	pool *sync.Pool
}

func (r *zstdReader) Read(p []byte) (int, error) {
	n, err := r.Decoder.Read(p)
	if errors.Is(err, io.EOF) {
		// Detach the source before pooling so it can be collected.
		_ = r.Reset(nil)
		r.pool.Put(r.Decoder)
	}
	return n, err
}
