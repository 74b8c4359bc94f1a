// etcd, exactly as upstream's own main: go.etcd.io/etcd/server/v3 cannot be `go install`ed
// as a command at a pinned version alongside Kubernetes, so this wrapper calls its entry point.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
