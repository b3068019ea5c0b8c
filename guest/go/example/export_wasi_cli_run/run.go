package export_wasi_cli_run

import (
	"fmt"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
	"wit_component/lockfile"
)

func Run() witTypes.Result[witTypes.Unit, witTypes.Unit] {
	return lockfile.Command(func() error {
		lock, err := lockfile.Lock("my.lock")
		if err != nil {
			return err
		}
		defer lock.Release()
		fmt.Println("holding", lock.Path())
		return nil
	})
}
