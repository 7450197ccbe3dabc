package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"
)

// ttfb measures, runs times, the time from weft.Start of a node whose
// membership is already joined to the first byte it reads from a TCP
// server on the anchor that writes as soon as it accepts. Each run dials by
// name, so it includes the record lookup, the connect exchange and the
// WireGuard handshake. The node is closed between runs and restarts on a
// new UDP port.
func (r *report) ttfb(runs int) error {
	w, err := newWeftNet("origin", "late", false)
	if err != nil {
		return err
	}
	defer w.close()
	ln, err := w.anchor.Listen("tcp", ":7000")
	if err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("x"))
			c.Close()
		}
	}()
	var ds, starts, dials []time.Duration
	for range runs {
		// WireGuard rejects an initiation whose TAI64N timestamp is not
		// after the last one accepted from that key, and wireguard-go
		// rounds timestamps down to ~16.8 ms (tai64n whitening). A node
		// restarted within that window of its previous handshake is
		// refused as a replay and retries after REKEY_TIMEOUT (5 s). No
		// real restart is that quick, so leave a gap between runs.
		time.Sleep(100 * time.Millisecond)
		d, err := firstByte(w)
		if err != nil {
			return err
		}
		ds, starts, dials = append(ds, d.total), append(starts, d.start), append(dials, d.dial)
	}
	slices.Sort(ds)
	slices.Sort(starts)
	slices.Sort(dials)
	r.linef("")
	r.linef("3. Time from weft.Start (joined node) to first byte from another node, %d runs", runs)
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
	p90 := func(ds []time.Duration) time.Duration { return ds[(len(ds)*9+9)/10-1] }
	r.linef("   median %s   p90 %s   min %s   max %s", ms(ds[len(ds)/2]), ms(p90(ds)), ms(ds[0]), ms(ds[len(ds)-1]))
	r.linef("   of which weft.Start: median %s p90 %s; Dial: median %s p90 %s",
		ms(starts[len(starts)/2]), ms(p90(starts)), ms(dials[len(dials)/2]), ms(p90(dials)))
	return nil
}

// phases are the parts of one time-to-first-byte run.
type phases struct{ start, dial, total time.Duration }

func firstByte(w *weftNet) (phases, error) {
	var ph phases
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	n, err := w.startMember(ctx)
	if err != nil {
		return ph, fmt.Errorf("start: %w", err)
	}
	defer n.Close()
	ph.start = time.Since(start)
	c, err := n.Dial(ctx, "tcp", "origin:7000")
	if err != nil {
		return ph, err
	}
	defer c.Close()
	ph.dial = time.Since(start) - ph.start
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return ph, fmt.Errorf("read first byte: %w", err)
	}
	ph.total = time.Since(start)
	return ph, nil
}
