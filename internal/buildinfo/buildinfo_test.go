package buildinfo

import (
	"runtime"
	"strings"
	"testing"
)

func TestReadFillsEveryField(t *testing.T) {
	got := Read()
	if got.Version == "" || got.Commit == "" {
		t.Errorf("Read() = %+v, want non-empty Version and Commit", got)
	}
	if got.GoVersion != runtime.Version() {
		t.Errorf("Read().GoVersion = %q, want %q", got.GoVersion, runtime.Version())
	}
}

func TestLinkerCommitIsUsedWithoutVCSStamp(t *testing.T) {
	old := Commit
	t.Cleanup(func() { Commit = old })
	Commit = "0123abcd"
	// Test binaries carry no VCS stamp, so the link-time value shows.
	if got := Read().Commit; got != "0123abcd" {
		t.Errorf("Read().Commit = %q, want %q", got, "0123abcd")
	}
}

func TestString(t *testing.T) {
	tests := []struct {
		info Info
		want string
	}{
		{Info{Version: "v1.2.3", Commit: "abc", GoVersion: "go1.26"}, "switchboard v1.2.3 commit abc go1.26"},
		{Info{Version: "(devel)", Commit: "abc", Modified: true, GoVersion: "go1.26"}, "switchboard (devel) commit abc (modified) go1.26"},
	}
	for _, tt := range tests {
		if got := tt.info.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.info, got, tt.want)
		}
		if !strings.HasPrefix(tt.info.String(), "switchboard ") {
			t.Errorf("String() lacks the program name")
		}
	}
}
