//go:build !unix

package spool

import (
	"errors"
	"os"
	"syscall"
)

// lockDir does not lock outside Unix: the cdcnode is built for Linux, and
// this file only keeps the package compiling elsewhere.
func lockDir(string) (*os.File, error) { return nil, nil }

// syncDir is a no-op where directories cannot be fsynced.
func syncDir(string) error { return nil }

func isNoSpace(err error) bool { return errors.Is(err, syscall.ENOSPC) }
