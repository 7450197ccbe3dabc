// Package pionlog adapts pion's leveled loggers (github.com/pion/logging)
// to *slog.Logger, for the pion ICE agents and TURN server that nat and
// nat/ice run.
package pionlog

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// Factory hands pion loggers that write to Log, each with a "pion"
// attribute naming its scope. pion is chatty and logs peers' mistakes as
// warnings and errors (often benign: a check to an unreachable candidate,
// a client's bad request): its Info and Warn are logged at Debug, its Error
// at Info, its Trace below Debug.
type Factory struct{ Log *slog.Logger }

var _ logging.LoggerFactory = Factory{}

// NewLogger returns a logger for scope.
func (f Factory) NewLogger(scope string) logging.LeveledLogger {
	return logger{f.Log.With("pion", scope)}
}

type logger struct{ log *slog.Logger }

// levelTrace is pion's Trace: below slog's Debug.
const levelTrace = slog.LevelDebug - 4

func (l logger) logf(level slog.Level, format string, args ...any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	l.log.Log(context.Background(), level, fmt.Sprintf(format, args...))
}

func (l logger) Trace(msg string)                  { l.logf(levelTrace, "%s", msg) }
func (l logger) Tracef(format string, args ...any) { l.logf(levelTrace, format, args...) }
func (l logger) Debug(msg string)                  { l.logf(slog.LevelDebug, "%s", msg) }
func (l logger) Debugf(format string, args ...any) { l.logf(slog.LevelDebug, format, args...) }
func (l logger) Info(msg string)                   { l.logf(slog.LevelDebug, "%s", msg) }
func (l logger) Infof(format string, args ...any)  { l.logf(slog.LevelDebug, format, args...) }
func (l logger) Warn(msg string)                   { l.logf(slog.LevelDebug, "%s", msg) }
func (l logger) Warnf(format string, args ...any)  { l.logf(slog.LevelDebug, format, args...) }
func (l logger) Error(msg string)                  { l.logf(slog.LevelInfo, "%s", msg) }
func (l logger) Errorf(format string, args ...any) { l.logf(slog.LevelInfo, format, args...) }
