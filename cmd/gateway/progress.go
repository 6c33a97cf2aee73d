package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// onTerminal reports whether stderr is a terminal: progress is shown only
// there, so that nothing but results reaches a pipe or a log file.
func onTerminal() bool {
	st, err := os.Stderr.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progress is where a registration's progress lines go: stderr on a
// terminal, nowhere otherwise.
func progress() io.Writer {
	if onTerminal() {
		return os.Stderr
	}
	return io.Discard
}

// showProgress draws a bar of sent against total on stderr, when it is a
// terminal, until the returned function is called (it may be called more
// than once).
func showProgress(sent *counter, total int64) func() {
	if !onTerminal() || total <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			drawBar(os.Stderr, sent.n.Load(), total)
			select {
			case <-done:
				drawBar(os.Stderr, sent.n.Load(), total)
				fmt.Fprintln(os.Stderr)
				return
			case <-t.C:
			}
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
}

func drawBar(w io.Writer, n, total int64) {
	const width = 30
	if n > total {
		n = total
	}
	filled := int(width * n / total)
	fmt.Fprintf(w, "\r[%s%s] %3d%% %d/%d MB", strings.Repeat("#", filled), strings.Repeat(" ", width-filled), 100*n/total, n>>20, total>>20)
}
