// Package buildinfo reports which build of Switchboard is running: the
// module version and the version-control commit it was built from.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Commit may be set at link time with
// -ldflags "-X github.com/switchboard-rpc/switchboard/internal/buildinfo.Commit=<sha>"
// for builds made without VCS stamping; the stamped revision wins when both
// exist.
var Commit string

// Info describes one build.
type Info struct {
	// Version is the main module's version: a tag such as v1.2.3 for a
	// released build, "(devel)" for a build from a work tree.
	Version string
	// Commit is the VCS revision, or "unknown" when the build carries none.
	Commit string
	// Modified reports uncommitted changes in the work tree at build time.
	Modified bool
	// GoVersion is the toolchain that built the binary.
	GoVersion string
}

// Read returns the running binary's build information.
func Read() Info {
	info := Info{Version: "(devel)", Commit: "unknown", GoVersion: runtime.Version()}
	if Commit != "" {
		info.Commit = Commit
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	if v := bi.Main.Version; v != "" {
		info.Version = v
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Commit = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// String renders the information on one line.
func (i Info) String() string {
	commit := i.Commit
	if i.Modified {
		commit += " (modified)"
	}
	return fmt.Sprintf("switchboard %s commit %s %s", i.Version, commit, i.GoVersion)
}
