// What a Go user would otherwise write: coder/websocket + compress/flate (one raw inflater per
// connection fed message by message, gomuks-rpc.md §5) + encoding/json per line.
// Usage: go-client URL COMPRESS(0|1)
package main

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/coder/websocket"
)

type envelope struct {
	Command   string          `json:"command"`
	RequestID int64           `json:"request_id"`
	Data      json.RawMessage `json:"data"`
}

// msgReader hands the inflater one websocket message after another, byte by byte, so
// flate never reads ahead past the message it is decoding.
type msgReader struct {
	ctx   context.Context
	conn  *websocket.Conn
	buf   []byte
	start *time.Time
}

func (m *msgReader) ReadByte() (byte, error) {
	for len(m.buf) == 0 {
		_, data, err := m.conn.Read(m.ctx)
		if err != nil {
			return 0, err
		}
		if m.start.IsZero() {
			*m.start = time.Now()
		}
		m.buf = data
	}
	b := m.buf[0]
	m.buf = m.buf[1:]
	return b, nil
}

func (m *msgReader) Read(p []byte) (int, error) {
	if len(m.buf) == 0 {
		b, err := m.ReadByte()
		if err != nil {
			return 0, err
		}
		p[0] = b
		return 1, nil
	}
	n := copy(p, m.buf)
	m.buf = m.buf[n:]
	return n, nil
}

func main() {
	url, compress := os.Args[1], os.Args[2] == "1"
	wsURL := strings.Replace(url, "http://", "ws://", 1) + "/_gomuks/websocket"
	if compress {
		wsURL += "?compress=1"
	}
	ctx := context.Background()
	h := http.Header{}
	h.Set("Cookie", "gomuks_auth=bench-token")
	conn, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		panic(err)
	}
	conn.SetReadLimit(-1)
	var start time.Time
	events := 0
	handle := func(line []byte) bool {
		if len(line) == 0 {
			return false
		}
		var env envelope
		if err := json.Unmarshal(line, &env); err != nil {
			panic(err)
		}
		if env.Command == "bench_end" {
			return true
		}
		events++
		return false
	}
	if compress {
		sc := bufio.NewScanner(flate.NewReader(&msgReader{ctx: ctx, conn: conn, start: &start}))
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			if handle(sc.Bytes()) {
				break
			}
		}
	} else {
	loop:
		for {
			_, data, err := conn.Read(ctx)
			if err != nil {
				if err == io.EOF {
					break
				}
				panic(err)
			}
			if start.IsZero() {
				start = time.Now()
			}
			for _, line := range bytes.Split(data, []byte{'\n'}) {
				if handle(line) {
					break loop
				}
			}
		}
	}
	secs := time.Since(start).Seconds()
	events-- // the run_id snapshot is not an event of the stream
	fmt.Printf("{\"client\":\"go-coder\",\"events\":%d,\"secs\":%f,\"eps\":%f}\n", events, secs, float64(events)/secs)
	conn.CloseNow()
}
