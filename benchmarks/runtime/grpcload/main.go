// grpcload sends one gRPC unary call, again and again, over plain HTTP/2: one
// connection per client, one call in flight on each (what h2load -m1 and wrk's
// -c do), and prints what it measured as one JSON object.
//
// Why not h2load: the benchmark's load generator shares the device's cores
// with the server it measures. For a 600 KB tensor h2load spends about 0.57 ms
// of CPU per call (it reads the body from its file for every 16 KiB frame and
// copies it through nghttp2's buffers); wrk spends 0.27 ms on the same bytes
// over REST. The gRPC rows then measured the load generator as much as the
// server. Here the message is kept in memory and its frames go out with one
// writev per window, so the kernel's copy is the only one.
//
// The frames are what a gRPC client sends: DATA as large as the server's
// SETTINGS_MAX_FRAME_SIZE allows, as grpcio's (grpc-core's) client does (the
// Python v2 clients, tritonclient's among them, run on it: a 600 KB message to a
// server allowing 1 MiB frames went as 4 frames of 128-192 KiB), or of at most
// -frame bytes (-frame 16384: grpc-go's, which never sends more); within both
// flow-control windows; headers HPACK-encoded per call with the connection's
// own table. An answer counts only with :status 200 and grpc-status 0.
//
// -n N makes exactly N calls per connection and counts them all (a test's
// run, ended by what it did, not by a clock); -d is then only a deadline.
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	preface     = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	ourWindow   = 1 << 24 // each stream's receive window we grant (an answer larger than this is given more)
	connGrant   = 1 << 30 // the connection's receive window we grant, topped up when half is used
	defaultPeer = 65535   // a window before the peer's SETTINGS say otherwise (RFC 9113 6.9.2)
)

type call struct {
	end     time.Time
	latency time.Duration
	status  string // "0" for a good answer, else the grpc-status, "http <code>", or what went wrong
}

type client struct {
	conn    net.Conn
	fr      *http2.Framer
	enc     *hpack.Encoder
	hbuf    bytes.Buffer
	path    string
	auth    string
	msg     []byte
	frame   int
	stream  uint32
	connWin int64 // what we may still send on the connection
	initWin int64 // the peer's SETTINGS_INITIAL_WINDOW_SIZE
	strWin  int64 // what we may still send on the current stream
	maxOut  int   // the peer's SETTINGS_MAX_FRAME_SIZE
	used    int64 // connection window we used since our last grant
	calls   []call
	early   string // the status of an answer that came while the call was still being sent
	ended   bool   // ... and whether that answer ended the call
	fatal   error
	fatalAt time.Time
}

func dial(addr, path string, msg []byte, frame int) (*client, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c := &client{conn: conn, path: path, auth: addr, msg: msg, frame: frame, stream: 1,
		connWin: defaultPeer, initWin: defaultPeer, maxOut: 16384}
	c.enc = hpack.NewEncoder(&c.hbuf)
	c.fr = http2.NewFramer(conn, bufio.NewReaderSize(conn, 64<<10)) // an answer's frames in one read, not two per frame
	c.fr.SetMaxReadFrameSize(1 << 24)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = 1 << 20
	if _, err := io.WriteString(conn, preface); err != nil {
		return nil, err
	}
	if err := c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: ourWindow},
		http2.Setting{ID: http2.SettingEnablePush, Val: 0}); err != nil {
		return nil, err
	}
	if err := c.fr.WriteWindowUpdate(0, connGrant-defaultPeer); err != nil {
		return nil, err
	}
	// The server's SETTINGS come first (RFC 9113 3.4): its frame size and windows before the first call.
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return nil, fmt.Errorf("no SETTINGS from the server: %w", err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			if err := c.control(f); err != nil {
				return nil, err
			}
			break
		}
		if err := c.control(f); err != nil {
			return nil, err
		}
	}
	_ = conn.SetReadDeadline(time.Time{})
	return c, nil
}

// control handles a frame that is not about the call's answer; it returns an error only for the connection's end.
func (c *client) control(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		err := f.ForeachSetting(func(s http2.Setting) error {
			switch s.ID {
			case http2.SettingInitialWindowSize:
				c.strWin += int64(s.Val) - c.initWin // applies to the open stream too (RFC 9113 6.9.2)
				c.initWin = int64(s.Val)
			case http2.SettingMaxFrameSize:
				c.maxOut = int(s.Val)
			}
			return nil
		})
		if err != nil {
			return err
		}
		return c.fr.WriteSettingsAck()
	case *http2.PingFrame:
		if !f.IsAck() {
			return c.fr.WritePing(true, f.Data)
		}
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			c.connWin += int64(f.Increment)
		} else if f.StreamID == c.stream {
			c.strWin += int64(f.Increment)
		}
	case *http2.GoAwayFrame:
		return fmt.Errorf("GOAWAY %v: %s", f.ErrCode, f.DebugData())
	}
	return nil
}

func (c *client) headers() []byte {
	c.hbuf.Reset()
	for _, h := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":path", c.path}, {":authority", c.auth},
		{"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		_ = c.enc.WriteField(hpack.HeaderField{Name: h[0], Value: h[1]})
	}
	return c.hbuf.Bytes()
}

func frameHeader(dst []byte, length int, kind http2.FrameType, flags http2.Flags, stream uint32) {
	dst[0], dst[1], dst[2] = byte(length>>16), byte(length>>8), byte(length)
	dst[3], dst[4] = byte(kind), byte(flags)
	binary.BigEndian.PutUint32(dst[5:], stream)
}

// send writes the call's HEADERS and its DATA frames, each burst as large as both windows allow, in one writev.
func (c *client) send() error {
	block := c.headers()
	head := make([]byte, 9, 9+len(block))
	frameHeader(head, len(block), http2.FrameHeaders, http2.FlagHeadersEndHeaders, c.stream)
	pending := net.Buffers{append(head, block...)} // the HEADERS go out with the first DATA: one writev
	size := c.maxOut
	if c.frame > 0 {
		size = min(c.frame, c.maxOut)
	}
	hdrs := make([]byte, 9*(len(c.msg)/max(size, 1)+2))
	rest := c.msg // never empty: at least the 5-byte prefix (checked in main)
	for len(rest) > 0 {
		room := min(c.connWin, c.strWin)
		if room <= 0 {
			if len(pending) > 0 {
				if _, err := pending.WriteTo(c.conn); err != nil {
					return err
				}
			}
			f, err := c.fr.ReadFrame()
			if err != nil {
				return err
			}
			// The server may answer before the whole message is sent (a message too large, a wrong
			// method): then the rest is not sent, as a gRPC client would not.
			switch f := f.(type) {
			case *http2.RSTStreamFrame:
				if f.StreamID == c.stream {
					c.early, c.ended = "RST_STREAM "+f.ErrCode.String(), true
					return nil
				}
			case *http2.MetaHeadersFrame:
				if f.StreamID == c.stream {
					if c.early = answerStatus(f, "no answer"); f.StreamEnded() {
						c.ended = true
						return nil
					}
				}
			}
			if err := c.control(f); err != nil {
				return err
			}
			continue
		}
		bufs := pending
		pending = nil
		h := hdrs
		for room > 0 && len(rest) > 0 {
			n := int(min(int64(size), room, int64(len(rest))))
			var flags http2.Flags
			if n == len(rest) {
				flags = http2.FlagDataEndStream
			}
			frameHeader(h, n, http2.FrameData, flags, c.stream)
			bufs = append(bufs, h[:9], rest[:n])
			h = h[9:]
			rest = rest[n:]
			room -= int64(n)
			c.connWin -= int64(n)
			c.strWin -= int64(n)
		}
		if _, err := bufs.WriteTo(c.conn); err != nil {
			return err
		}
	}

	return nil
}

// receive reads until the call's stream ends; it returns the call's status, or an error for the connection's end.
func (c *client) receive() (string, error) {
	status := "no answer"
	if c.early != "" {
		status = c.early
	}
	var got int64
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return "", err
		}
		switch f := f.(type) {
		case *http2.DataFrame:
			n := int64(f.Length)
			c.used += n
			if c.used > connGrant/2 {
				if err := c.fr.WriteWindowUpdate(0, uint32(c.used)); err != nil {
					return "", err
				}
				c.used = 0
			}
			if f.StreamID != c.stream {
				continue
			}
			got += n
			if got > ourWindow/2 && !f.StreamEnded() {
				if err := c.fr.WriteWindowUpdate(c.stream, uint32(got)); err != nil {
					return "", err
				}
				got = 0
			}
			if f.StreamEnded() {
				return "no trailers", nil
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID != c.stream {
				continue
			}
			if status = answerStatus(f, status); f.StreamEnded() {
				return status, nil
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == c.stream {
				return "RST_STREAM " + f.ErrCode.String(), nil
			}
		default:
			if err := c.control(f); err != nil {
				return "", err
			}
		}
	}
}

// answerStatus is what a HEADERS frame of the answer says of the call: "0" for success.
func answerStatus(f *http2.MetaHeadersFrame, before string) string {
	if s := f.PseudoValue("status"); s != "" && s != "200" {
		return "http " + s
	}
	for _, h := range f.RegularFields() {
		if h.Name == "grpc-status" && strings.HasPrefix(before, "no ") {
			return h.Value
		}
	}
	return before
}

// run makes calls until `stop`, or until it has made `limit` of them (0: no limit).
func (c *client) run(stop time.Time, limit int) {
	for time.Now().Before(stop) && (limit == 0 || len(c.calls) < limit) {
		t0 := time.Now()
		c.strWin = c.initWin
		c.early, c.ended = "", false
		err := c.send()
		status := c.early
		if err == nil && !c.ended {
			status, err = c.receive()
		}
		if err != nil {
			c.fatal, c.fatalAt = err, time.Now()
			return
		}
		now := time.Now()
		c.calls = append(c.calls, call{end: now, latency: now.Sub(t0), status: status})
		c.stream += 2
		if c.stream > 1<<31-1 {
			c.fatal, c.fatalAt = errors.New("stream ids used up"), time.Now()
			return
		}
	}
}

type result struct {
	Requests    int            `json:"requests"`
	Errors      int            `json:"errors"`
	Seconds     float64        `json:"seconds"`
	RPS         float64        `json:"rps"`
	P50ms       float64        `json:"p50_ms"`
	P99ms       float64        `json:"p99_ms"`
	Statuses    map[string]int `json:"statuses"`
	Connections int            `json:"connections"`
	Failed      []string       `json:"failed_connections,omitempty"`
}

func main() {
	addr := flag.String("addr", "", "host:port of the server (plain HTTP/2)")
	path := flag.String("path", "/inference.GRPCInferenceService/ModelInfer", "the method's path")
	data := flag.String("data", "", "file holding the gRPC-framed request message (5-byte prefix and message)")
	conns := flag.Int("c", 1, "connections, one call in flight on each")
	duration := flag.Duration("d", 4*time.Second, "how long calls are counted")
	warmup := flag.Duration("warmup", time.Second, "how long calls run before they are counted")
	frame := flag.Int("frame", 0, "largest DATA frame sent; 0: the server's SETTINGS_MAX_FRAME_SIZE (which caps any)")
	grace := flag.Duration("grace", 60*time.Second, "how long the last calls may take after the window")
	calls := flag.Int("n", 0, "calls per connection, all counted (no warm-up); -d is then a deadline; 0: as many as -d allows")
	flag.Parse()
	fail := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "grpcload: "+format+"\n", a...)
		os.Exit(2)
	}
	switch {
	case *addr == "":
		fail("-addr is required")
	case *conns < 1 || *conns > 10000:
		fail("-c must be 1 to 10000, not %d", *conns)
	case *duration <= 0:
		fail("-d must be positive")
	case *warmup < 0:
		fail("-warmup must not be negative")
	case *calls < 0:
		fail("-n must not be negative")
	case *frame < 0 || *frame > 1<<24-1:
		fail("-frame must be 0 to 16777215, not %d", *frame)
	}
	msg, err := os.ReadFile(*data)
	if err != nil {
		fail("-data: %v", err)
	}
	if len(msg) < 5 || int(binary.BigEndian.Uint32(msg[1:5])) != len(msg)-5 {
		fail("-data %s is not one gRPC-framed message (a 5-byte prefix whose length is the rest)", *data)
	}

	clients := make([]*client, *conns)
	for i := range clients {
		if clients[i], err = dial(*addr, *path, msg, *frame); err != nil {
			fail("connection %d: %v", i+1, err)
		}
	}
	start := time.Now()
	begin := start.Add(*warmup)
	if *calls > 0 {
		begin = start // a counted run: every call counts
	}
	stop := begin.Add(*duration)
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() { defer wg.Done(); c.run(stop, *calls) }()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Until(stop) + *grace):
	}
	for _, c := range clients {
		_ = c.conn.Close() // ends a call still waiting past the grace; its client is not read below until done
	}
	<-done

	res := result{Seconds: duration.Seconds(), Statuses: map[string]int{}, Connections: *conns}
	last := begin
	var lat []float64
	for i, c := range clients {
		for _, k := range c.calls {
			if k.end.Before(begin) || k.end.After(stop) {
				continue
			}
			if k.end.After(last) {
				last = k.end
			}
			lat = append(lat, float64(k.latency.Microseconds())/1000)
			res.Statuses[k.status]++
			if k.status != "0" {
				res.Errors++
			}
		}
		if c.fatal != nil && c.fatalAt.Before(stop) {
			res.Failed = append(res.Failed, "connection "+strconv.Itoa(i+1)+": "+c.fatal.Error())
		}
	}
	if *calls > 0 { // the time the calls took, not the deadline
		res.Seconds = max(last.Sub(begin).Seconds(), 1e-9)
	}
	res.Requests = len(lat)
	res.RPS = float64(len(lat)) / res.Seconds
	if len(lat) > 0 {
		sort.Float64s(lat)
		res.P50ms = lat[len(lat)/2]
		res.P99ms = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	if len(lat) == 0 {
		os.Exit(1)
	}
}
