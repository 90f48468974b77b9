// SPDX-License-Identifier: Apache-2.0

// Command pause is the pod sandbox process: it holds the pod's namespaces open, reaps
// orphans when it is PID 1 of a shared PID namespace, and exits on SIGINT or SIGTERM.
// containerd expects it as registry.k8s.io/pause; this copy lets pods start with no
// registry.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		reapChildren()
	}
}

// reapChildren collects every exited child so none stays a zombie.
func reapChildren() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
