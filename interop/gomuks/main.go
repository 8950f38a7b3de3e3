// Command gomuks-interop runs the real gomuks backend (the go.mau.fi/gomuks
// module pinned in go.mod) headless on 127.0.0.1 so that tether's interop
// suite can talk to the genuine websocket RPC instead of the spec-derived
// testkit.
//
// It mirrors what cmd/gomuks does in desktop mode (GOMUKS_DESKTOP_KEY
// authentication, no stdin prompt) but drives the steps itself so that it can
// (a) pin the listener to 127.0.0.1 instead of "localhost", which may resolve
// to ::1, (b) keep all state in a private temporary directory that is removed
// on exit, and (c) announce readiness only after the Matrix client object
// exists: gomuks prints its own {"started":...} line before that, and a
// websocket arriving in that window hits a nil client (gomuks-rpc.md §13.1).
//
// stdout protocol: exactly one line, {"address":"127.0.0.1:PORT","interop_ready":true,
// "root":"DIR"}; gomuks' own {"started":true,...} line and all logs go to stderr.
// Data lives in -root, else $GOMUKS_ROOT (both kept), else a fresh temporary directory
// removed on SIGINT/SIGTERM. $GOMUKS_INTEROP_LOG, if set, names a file that takes the
// process's stderr (gomuks' logs) so a test runner's own output stays readable.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"syscall"

	"go.mau.fi/gomuks/pkg/gomuks"
	"go.mau.fi/gomuks/pkg/hicli"
)

func main() {
	keep := flag.Bool("keep", false, "keep the temporary data directory on exit (for debugging)")
	root := flag.String("root", "", "use this data directory instead of a fresh temporary one (kept on exit)")
	flag.Parse()

	key := os.Getenv("GOMUKS_DESKTOP_KEY")
	if key == "" {
		fmt.Fprintln(os.Stderr, "gomuks-interop: GOMUKS_DESKTOP_KEY must be set (desktop-key auth is how the suite logs in)")
		os.Exit(2)
	}

	dir := *root
	if dir == "" {
		// A runner that owns the directory (and removes it even after a SIGKILL) says so here.
		dir = os.Getenv("GOMUKS_ROOT")
	}
	cleanup := func() {}
	if dir == "" {
		tmp, err := os.MkdirTemp("", "gomuks-interop-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "gomuks-interop: temp dir:", err)
			os.Exit(2)
		}
		dir = tmp
		if !*keep {
			cleanup = func() { _ = os.RemoveAll(tmp) }
		}
	}

	if path := os.Getenv("GOMUKS_INTEROP_LOG"); path != "" {
		// gomuks logs to stderr in desktop mode; a test runner wants its own stderr readable.
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			fmt.Fprintln(os.Stderr, "gomuks-interop: log file:", err)
			os.Exit(2)
		}
		// Moved at the descriptor level: gomuks' log writer holds the stderr *os.File it saw
		// at package initialisation.
		if err := syscall.Dup3(int(f.Fd()), 2, 0); err != nil {
			fmt.Fprintln(os.Stderr, "gomuks-interop: redirect stderr:", err)
			os.Exit(2)
		}
		_ = f.Close()
	}

	hicli.InitialDeviceDisplayName = "gomuks tether-interop"
	gmx := gomuks.NewGomuks()
	gmx.DesktopKey = key
	gmx.InitDirectories(dir)
	if err := gmx.LoadConfig(); err != nil {
		fmt.Fprintln(os.Stderr, "gomuks-interop: load config:", err)
		cleanup()
		os.Exit(9)
	}
	// Overrides live only in memory: LoadConfig has already written the file.
	gmx.Config.Web.ListenAddress = "127.0.0.1:0"
	gmx.SetupLog()
	// gomuks' own {"started":...} line comes before the client exists; keep it off stdout so
	// the single line there is the one that means "ready".
	stdout := os.Stdout
	os.Stdout = os.Stderr
	gmx.StartServer()
	if code := gmx.StartClientWithoutExit(gmx.Log.WithContext(context.Background())); code != 0 {
		fmt.Fprintln(os.Stderr, "gomuks-interop: client start failed with code", code)
		gmx.DirectStop()
		cleanup()
		os.Exit(code)
	}
	ready, _ := json.Marshal(map[string]any{"interop_ready": true, "address": gmx.Server.Addr, "root": dir})
	fmt.Fprintf(stdout, "%s\n", ready)
	// Whoever waits for the ready line may close the pipe; later writes (desktop
	// notifications) therefore keep going to stderr, as os.Stdout still points there: a write
	// to the closed pipe would raise SIGPIPE and kill the backend.

	gmx.WaitForInterrupt()
	gmx.DirectStop()
	cleanup()
}
