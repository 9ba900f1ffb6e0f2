// Package bench holds the benchmarks that compare the kit against bare
// grpc-go on the same machine in the same run. `make bench` runs them
// through bench/cmd/benchratio, which prints each kit result next to its
// bare baseline as a ratio.
package bench
