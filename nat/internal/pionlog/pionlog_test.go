package pionlog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestLevels(t *testing.T) {
	var buf bytes.Buffer
	h := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: levelTrace})
	l := Factory{Log: slog.New(h)}.NewLogger("ice")
	for _, c := range []struct {
		name string
		log  func()
		want string
	}{
		{"trace", func() { l.Tracef("x%d", 1) }, "level=DEBUG-4 msg=x1 pion=ice"},
		{"debug", func() { l.Debug("x") }, "level=DEBUG msg=x pion=ice"},
		{"info", func() { l.Infof("%s", "x") }, "level=DEBUG msg=x pion=ice"},
		{"warn", func() { l.Warn("x") }, "level=DEBUG msg=x pion=ice"},
		{"error", func() { l.Errorf("x") }, "level=INFO msg=x pion=ice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			buf.Reset()
			c.log()
			if got := buf.String(); !strings.Contains(got, c.want) {
				t.Errorf("logged %q; want %q", got, c.want)
			}
		})
	}
}
