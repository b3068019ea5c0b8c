// Package lockfile: zc.lockfile's lock files for Go plugins, over the
// lockfile:lockfile WIT interface, on the bindings `wit-bindgen go`
// generates for world `plugin` (module wit_component). Copy this directory
// into the module beside them.
//
//	func Run() witTypes.Result[witTypes.Unit, witTypes.Unit] {
//		return lockfile.Command(func() error {
//			lock, err := lockfile.Lock("job.lock") // " <pid>\n" written into the file
//			if err != nil {
//				return err // Couldn't lock 'job.lock': held by 1234, exit 75
//			}
//			defer lock.Release()
//			...
//		})
//	}
//
// Paths are relative to the lock directory the host gave the plugin.
package lockfile

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
	"wit_component/lockfile_lockfile_lockfile"
	"wit_component/lockfile_lockfile_types"
	"wit_component/wasi_cli_exit"
)

// ErrLocked and ErrTimedOut match (errors.Is) a *LockError: someone else
// holds the lock, or held it for the whole wait.
var (
	ErrLocked   = errors.New("locked")
	ErrTimedOut = errors.New("timed out")
)

// LockError is a lock held by someone else, worded like zc.lockfile's
// LockError: "Couldn't lock 'job.lock': held by 1234".
type LockError struct {
	Path string
	// What the holder wrote, and whether it wrote anything.
	Holder    string
	HasHolder bool
	// How long the host waited, for ErrTimedOut.
	Waited time.Duration
	kind   error
}

func (e *LockError) Error() string {
	within := ""
	if e.kind == ErrTimedOut {
		within = " within " + duration(e.Waited)
	}
	heldBy := ""
	if e.HasHolder {
		heldBy = ": held by " + e.Holder
	}
	return fmt.Sprintf("Couldn't lock '%s'%s%s", e.Path, within, heldBy)
}

func (e *LockError) Is(target error) bool { return target == e.kind }

// duration prints a wait as the Rust library does: 50ms, 1.5s, 3600s.
func duration(d time.Duration) string {
	ms := d.Milliseconds()
	if ms < 1000 {
		return fmt.Sprintf("%dms", ms)
	}
	s := strconv.FormatFloat(float64(ms)/1000, 'f', 3, 64)
	return strings.TrimSuffix(strings.TrimRight(s, "0"), ".") + "s"
}

func toError(path string, e lockfile_lockfile_types.Error) error {
	switch e.Tag() {
	case lockfile_lockfile_types.Error_Locked:
		holder := e.Locked()
		return &LockError{Path: path, Holder: holder.SomeOr(""), HasHolder: holder.IsSome(), kind: ErrLocked}
	case lockfile_lockfile_types.Error_TimedOut:
		t := e.TimedOut()
		return &LockError{Path: path, Holder: t.Holder.SomeOr(""), HasHolder: t.Holder.IsSome(),
			Waited: time.Duration(t.WaitedMs) * time.Millisecond, kind: ErrTimedOut}
	case lockfile_lockfile_types.Error_NotPermitted:
		return errors.New("not permitted: " + e.NotPermitted())
	case lockfile_lockfile_types.Error_InvalidTemplate:
		return errors.New(e.InvalidTemplate())
	case lockfile_lockfile_types.Error_TooManyLocks:
		return fmt.Errorf("too many locks: this plugin may hold %d", e.TooManyLocks())
	default:
		return errors.New(e.Io())
	}
}

// LockFile is a held lock.
type LockFile struct {
	handle *lockfile_lockfile_lockfile.Lock
	path   string
}

// Lock is zc.lockfile's LockFile(path): one try, " <pid>\n" written.
func Lock(path string) (*LockFile, error) {
	template := "{pid}"
	return LockWith(path, &template, 0)
}

// LockWith takes the lock with a content template ({pid}, {hostname},
// {plugin}; nil writes nothing) and a wait (0 tries once).
func LockWith(path string, template *string, wait time.Duration) (*LockFile, error) {
	options := lockfile_lockfile_types.Options{ContentTemplate: witTypes.None[string](), WaitMs: uint64(wait.Milliseconds())}
	if template != nil {
		options.ContentTemplate = witTypes.Some(*template)
	}
	result := lockfile_lockfile_lockfile.LockAcquire(path, options)
	if result.IsErr() {
		return nil, toError(path, result.Err())
	}
	return &LockFile{handle: result.Ok(), path: path}, nil
}

// Path is the path the lock was taken with.
func (l *LockFile) Path() string { return l.path }

// Content is what this holder wrote, if anything.
func (l *LockFile) Content() (string, bool) {
	content := l.handle.Content()
	return content.SomeOr(""), content.IsSome()
}

// Held is false once the lock is released or lost.
func (l *LockFile) Held() bool { return l.handle != nil && l.handle.Held() }

// Release releases the lock; releasing twice does nothing.
func (l *LockFile) Release() {
	if l.handle != nil {
		l.handle.Release()
		l.handle.Drop()
		l.handle = nil
	}
}

// ReadContent is what the holder of path wrote, without taking the lock.
func ReadContent(path string) (string, bool, error) {
	result := lockfile_lockfile_lockfile.ReadContent(path)
	if result.IsErr() {
		return "", false, toError(path, result.Err())
	}
	return result.Ok().SomeOr(""), result.Ok().IsSome(), nil
}

// Exit ends the plugin with exit status code, which `lockfile run` exits
// with (75, EX_TEMPFAIL: "held, try again later"). os.Exit cannot: under
// wasi:cli 0.2 it reports only success or failure.
func Exit(code uint8) {
	os.Stdout.Sync()
	os.Stderr.Sync()
	wasi_cli_exit.ExitWithCode(code)
}

// Command runs a plugin's main as its wasi:cli/run export: a lock held by
// someone else prints its one line on stderr and exits 75; any other error
// prints "Error: " and its message and exits 1.
func Command(main func() error) witTypes.Result[witTypes.Unit, witTypes.Unit] {
	err := main()
	if err == nil {
		return witTypes.Ok[witTypes.Unit, witTypes.Unit](witTypes.Unit{})
	}
	if errors.Is(err, ErrLocked) || errors.Is(err, ErrTimedOut) {
		fmt.Fprintln(os.Stderr, err)
		Exit(75)
	}
	fmt.Fprintln(os.Stderr, "Error:", err)
	Exit(1)
	return witTypes.Err[witTypes.Unit, witTypes.Unit](witTypes.Unit{})
}
