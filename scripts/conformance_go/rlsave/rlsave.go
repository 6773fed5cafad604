// Package rlsave records the process's resource limits before package os starts:
// since Go 1.19, os's init raises the soft RLIMIT_NOFILE to the hard limit, which would
// hide the limit the runtime under test set. Import it first, before any package that
// imports os.
package rlsave

import "syscall"

// Limits holds getrlimit(2) for resources 0..15, read before any other init.
var Limits [16]syscall.Rlimit

// Err holds the errno of each read.
var Err [16]error

func init() {
	for i := range Limits {
		Err[i] = syscall.Getrlimit(i, &Limits[i])
	}
}
