// A Go plugin scripted by its arguments, like the Rust test program lockctl:
//
//	lock PATH TEMPLATE WAIT_MS   -> "locked CONTENT" or "error MESSAGE" (TEMPLATE "-": no content)
//	release                      -> "released"
//	read PATH                    -> "content CONTENT" or "content -"
//	hold MS                      keep everything held for MS milliseconds
//	exit CODE                    exit with status CODE, through lockfile.Exit
package export_wasi_cli_run

import (
	"fmt"
	"os"
	"strconv"
	"time"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
	"wit_component/lockfile"
)

func Run() witTypes.Result[witTypes.Unit, witTypes.Unit] {
	args := os.Args[1:]
	var held []*lockfile.LockFile
	number := func(s string) uint64 {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			fmt.Fprintln(os.Stderr, "not a number:", s)
			lockfile.Exit(2)
		}
		return n
	}
	for len(args) > 0 {
		step := args[0]
		args = args[1:]
		switch {
		case step == "lock" && len(args) >= 3:
			path, template, wait := args[0], args[1], time.Duration(number(args[2]))*time.Millisecond
			args = args[3:]
			var content *string
			if template != "-" {
				content = &template
			}
			lock, err := lockfile.LockWith(path, content, wait)
			if err != nil {
				fmt.Println("error", err)
				continue
			}
			held = append(held, lock)
			written, ok := lock.Content()
			if !ok {
				written = "-"
			}
			fmt.Println("locked", written)
		case step == "release" && len(held) > 0:
			held[len(held)-1].Release()
			held = held[:len(held)-1]
			fmt.Println("released")
		case step == "read" && len(args) >= 1:
			content, ok, _ := lockfile.ReadContent(args[0])
			args = args[1:]
			if !ok {
				content = "-"
			}
			fmt.Println("content", content)
		case step == "hold" && len(args) >= 1:
			time.Sleep(time.Duration(number(args[0])) * time.Millisecond)
			args = args[1:]
		case step == "exit" && len(args) >= 1:
			lockfile.Exit(uint8(number(args[0])))
		default:
			fmt.Fprintln(os.Stderr, "unknown step", step)
			lockfile.Exit(2)
		}
	}
	for i := len(held) - 1; i >= 0; i-- {
		held[i].Release()
	}
	return witTypes.Ok[witTypes.Unit, witTypes.Unit](witTypes.Unit{})
}
