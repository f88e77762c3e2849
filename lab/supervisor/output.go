package supervisor

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
)

const (
	tailLines = 50       // lines kept per instance for error messages
	maxLine   = 64 << 10 // longer lines are cut (and marked) rather than buffered whole
)

// output fans every process's lines into one writer, one whole line per Write, so lines
// of different processes never interleave mid-line.
type output struct {
	mu     sync.Mutex
	w      io.Writer
	colour bool
	width  int // longest instance id seen: prefixes line up
}

func newOutput(w io.Writer) *output {
	return &output{w: w, colour: isTerminal(w) && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"}
}

// isTerminal reports whether w is a character device (a terminal), without a terminal
// library: colour codes written to a file or a pipe would only be noise there.
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Stat() (os.FileInfo, error) })
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func (o *output) register(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.width = max(o.width, len(id))
}

// pump copies r line by line to the output (or, if file is not nil, to file) and the
// tail ring until EOF.
func (o *output) pump(r io.Reader, id string, colour int, tail *ring, file io.Writer) {
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			o.line(id, colour, tail, file, string(line)+" …[cut]")
			// Skip the rest of the over-long line.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err != nil {
				return
			}
			continue
		}
		if len(line) > 0 {
			o.line(id, colour, tail, file, string(bytes.TrimRight(line, "\r\n")))
		}
		if err != nil {
			return
		}
	}
}

func (o *output) line(id string, colour int, tail *ring, file io.Writer, text string) {
	tail.add(text)
	if file != nil {
		_, _ = io.WriteString(file, text+"\n") // one write per line: O_APPEND keeps lines whole
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	var b strings.Builder
	pad := strings.Repeat(" ", max(o.width-len(id), 0))
	if o.colour {
		b.WriteString("\x1b[" + palette(colour) + "m" + id + pad + " |\x1b[0m ")
	} else {
		b.WriteString(id + pad + " | ")
	}
	b.WriteString(text)
	b.WriteByte('\n')
	_, _ = io.WriteString(o.w, b.String()) // a broken log sink must not stop the process
}

// palette returns the ANSI SGR colour code for the i-th instance: bright, readable on
// dark and light backgrounds, red left out (it reads as an error).
func palette(i int) string {
	codes := [...]int{36, 33, 32, 35, 34, 96, 93, 92, 95, 94}
	return strconv.Itoa(codes[i%len(codes)])
}

// ring keeps the last tailLines lines.
type ring struct {
	mu   sync.Mutex
	buf  [tailLines]string
	next int
	n    int
}

func (r *ring) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf[r.next] = s
	r.next = (r.next + 1) % len(r.buf)
	r.n = min(r.n+1, len(r.buf))
}

// lines returns the kept lines, oldest first.
func (r *ring) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, r.n)
	start := (r.next - r.n + len(r.buf)) % len(r.buf)
	for i := range r.n {
		out = append(out, r.buf[(start+i)%len(r.buf)])
	}
	return out
}
