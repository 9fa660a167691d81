package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
)

// indent is how far the lines under a step are indented.
const indent = "      "

// printer writes the demo's transcript. It is safe for concurrent use, since
// scripts' progress is copied in from other goroutines.
type printer struct {
	mu  sync.Mutex
	out io.Writer
}

func (p *printer) write(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, _ = io.WriteString(p.out, s)
}

// linef prints an indented line.
func (p *printer) linef(format string, args ...any) {
	p.write(indentLines(fmt.Sprintf(format, args...), indent))
}

// block prints text (command output, a log tail) indented under a step.
func (p *printer) block(text string) {
	text = strings.TrimRight(text, "\n")
	if text == "" {
		return
	}
	p.write(indentLines(text, indent+"  "))
}

func indentLines(s, prefix string) string {
	var b strings.Builder
	for l := range strings.SplitSeq(strings.TrimRight(s, "\n"), "\n") {
		if l == "" {
			b.WriteString("\n")
			continue
		}
		b.WriteString(prefix + l + "\n")
	}
	return b.String()
}

// lineWriter passes what is written to it on to a printer line by line,
// indented, so that a script's progress shows as it happens.
type lineWriter struct {
	p      *printer
	prefix string
	buf    bytes.Buffer
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.buf.Write(b)
	for {
		i := bytes.IndexByte(w.buf.Bytes(), '\n')
		if i < 0 {
			break
		}
		line := string(w.buf.Next(i + 1))
		w.p.write(w.prefix + line)
	}
	return len(b), nil
}

// Flush prints an unterminated last line.
func (w *lineWriter) Flush() {
	if w.buf.Len() > 0 {
		w.p.write(w.prefix + w.buf.String() + "\n")
		w.buf.Reset()
	}
}
