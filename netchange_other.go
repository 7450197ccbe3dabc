//go:build !linux

package weft

import (
	"context"
	"errors"
)

// watchNetChanges is not implemented here: the node polls.
func watchNetChanges(context.Context, chan<- struct{}) error {
	return errors.New("network change notifications are only implemented on Linux")
}

// defaultRoutes is not implemented here: address changes only.
func defaultRoutes() []string { return nil }
