package store

import "syscall"

var errnoENOSPC = syscall.ENOSPC
