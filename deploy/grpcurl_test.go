package deploy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fullstorydev/grpcurl"
	"github.com/jhump/protoreflect/grpcreflect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
)

// grpcurlCommand is one `grpcurl …` line of the runbook or of NOTES.txt,
// parsed the way grpcurl's command line parses it. Only the flags the docs
// use are known; any other flag is an error, so a doc cannot use one this
// harness would silently ignore.
type grpcurlCommand struct {
	line       string
	plaintext  bool
	data       string
	headers    []string
	cacert     string
	cert, key  string
	serverName string
	address    string
	// verb is "list", "describe" or "" (invoke symbol).
	verb   string
	symbol string
}

// grpcurlLines returns the grpcurl command lines in text: lines (after
// joining backslash continuations) whose first word is grpcurl. In
// Markdown, only lines inside fenced code blocks count.
func grpcurlLines(text string, markdown bool) []string {
	var lines []string
	inFence := !markdown
	var cont strings.Builder
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		l := sc.Text()
		if markdown && strings.HasPrefix(strings.TrimSpace(l), "```") {
			inFence = !inFence
			continue
		}
		if !inFence {
			continue
		}
		if strings.HasSuffix(l, `\`) {
			cont.WriteString(strings.TrimSuffix(l, `\`))
			continue
		}
		cont.WriteString(l)
		full := strings.TrimSpace(cont.String())
		cont.Reset()
		if strings.HasPrefix(full, "grpcurl ") {
			lines = append(lines, full)
		}
	}
	return lines
}

// shellWords splits a command line as a POSIX shell would for the simple
// forms docs use: single quotes literal, double quotes and bare words with
// $VAR and ${VAR} expanded from env (an unknown variable is an error). It
// stops at an unquoted |, ;, & or #.
func shellWords(line string, env map[string]string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	expand := func(s string, i int) (int, error) {
		// s[i] == '$'
		j := i + 1
		var name string
		if j < len(s) && s[j] == '{' {
			end := strings.IndexByte(s[j:], '}')
			if end < 0 {
				return 0, fmt.Errorf("unclosed ${ in %q", line)
			}
			name, j = s[j+1:j+end], j+end+1
		} else {
			k := j
			for k < len(s) && (s[k] == '_' || s[k] >= 'A' && s[k] <= 'Z' || s[k] >= 'a' && s[k] <= 'z' || s[k] >= '0' && s[k] <= '9') {
				k++
			}
			name, j = s[j:k], k
		}
		v, ok := env[name]
		if !ok {
			return 0, fmt.Errorf("$%s is not set (known: %v)", name, keys(env))
		}
		cur.WriteString(v)
		return j, nil
	}
	for i := 0; i < len(line); {
		c := line[i]
		switch {
		case c == '\'':
			end := strings.IndexByte(line[i+1:], '\'')
			if end < 0 {
				return nil, fmt.Errorf("unclosed ' in %q", line)
			}
			cur.WriteString(line[i+1 : i+1+end])
			inWord, i = true, i+end+2
		case c == '"':
			inWord = true
			i++
			for {
				if i >= len(line) {
					return nil, fmt.Errorf(`unclosed " in %q`, line)
				}
				if line[i] == '"' {
					i++
					break
				}
				if line[i] == '$' {
					var err error
					if i, err = expand(line, i); err != nil {
						return nil, err
					}
					continue
				}
				if line[i] == '\\' && i+1 < len(line) && strings.IndexByte(`"\$`, line[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(line[i])
				i++
			}
		case c == '$':
			var err error
			if i, err = expand(line, i); err != nil {
				return nil, err
			}
			inWord = true
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
			i++
		case strings.IndexByte("|;&#", c) >= 0:
			i = len(line)
		default:
			cur.WriteByte(c)
			inWord, i = true, i+1
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// parseGrpcurl parses one grpcurl line.
func parseGrpcurl(line string, env map[string]string) (grpcurlCommand, error) {
	words, err := shellWords(line, env)
	if err != nil {
		return grpcurlCommand{}, err
	}
	c := grpcurlCommand{line: line}
	if len(words) == 0 || words[0] != "grpcurl" {
		return c, fmt.Errorf("not a grpcurl command: %q", line)
	}
	args := words[1:]
	value := func(i int) (string, error) {
		if i+1 >= len(args) {
			return "", fmt.Errorf("%s needs a value", args[i])
		}
		return args[i+1], nil
	}
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			pos = append(pos, a)
			continue
		}
		name := strings.TrimLeft(a, "-")
		if name == "plaintext" {
			c.plaintext = true
			continue
		}
		v, err := value(i)
		if err != nil {
			return c, err
		}
		i++
		switch name {
		case "d":
			c.data = v
		case "H":
			c.headers = append(c.headers, v)
		case "cacert":
			c.cacert = v
		case "cert":
			c.cert = v
		case "key":
			c.key = v
		case "servername":
			c.serverName = v
		default:
			return c, fmt.Errorf("flag -%s is not one this harness runs; add it here if the docs need it", name)
		}
	}
	if len(pos) < 2 {
		return c, fmt.Errorf("want ADDRESS and a method, list or describe; got %v", pos)
	}
	c.address = pos[0]
	switch pos[1] {
	case "list", "describe":
		c.verb = pos[1]
		if len(pos) > 2 {
			c.symbol = pos[2]
		}
	default:
		c.symbol = pos[1]
	}
	if len(pos) > 3 || (c.verb == "" && len(pos) > 2) {
		return c, fmt.Errorf("extra arguments %v", pos)
	}
	if c.plaintext && (c.cacert != "" || c.cert != "" || c.serverName != "") {
		return c, errors.New("-plaintext with TLS flags")
	}
	return c, nil
}

// run does what the grpcurl command line does for this command (see
// grpcurl's cmd/grpcurl/grpcurl.go), against address instead of
// c.address, with relative file names resolved in dir. It returns the
// output grpcurl would print.
func (c grpcurlCommand) run(ctx context.Context, address, dir string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	file := func(f string) string {
		if f == "" || filepath.IsAbs(f) {
			return f
		}
		return filepath.Join(dir, f)
	}
	var creds credentials.TransportCredentials
	var opts []grpc.DialOption
	if !c.plaintext {
		tc, err := grpcurl.ClientTLSConfig(false, file(c.cacert), file(c.cert), file(c.key))
		if err != nil {
			return "", fmt.Errorf("TLS config: %w", err)
		}
		creds = credentials.NewTLS(tc)
		if c.serverName != "" {
			opts = append(opts, grpc.WithAuthority(c.serverName))
		}
	}
	dialCtx, dialCancel := context.WithTimeout(ctx, 10*time.Second)
	defer dialCancel()
	cc, err := grpcurl.BlockingDial(dialCtx, "", address, creds, opts...)
	if err != nil {
		return "", fmt.Errorf("dial %s: %w", address, err)
	}
	defer cc.Close()
	refCtx := metadata.NewOutgoingContext(ctx, grpcurl.MetadataFromHeaders(c.headers))
	refClient := grpcreflect.NewClientAuto(refCtx, cc)
	refClient.AllowMissingFileDescriptors()
	defer refClient.Reset()
	src := grpcurl.DescriptorSourceFromServer(ctx, refClient)

	var out strings.Builder
	switch c.verb {
	case "list":
		var names []string
		if c.symbol == "" {
			names, err = grpcurl.ListServices(src)
		} else {
			names, err = grpcurl.ListMethods(src, c.symbol)
		}
		if err != nil {
			return "", err
		}
		out.WriteString(strings.Join(names, "\n"))
	case "describe":
		symbols := []string{c.symbol}
		if c.symbol == "" {
			if symbols, err = src.ListServices(); err != nil {
				return "", err
			}
		}
		for _, s := range symbols {
			d, err := src.FindSymbol(strings.TrimPrefix(s, "."))
			if err != nil {
				return "", fmt.Errorf("resolve %q: %w", s, err)
			}
			txt, err := grpcurl.GetDescriptorText(d, src)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(&out, "%s is a %T:\n%s\n", d.GetFullyQualifiedName(), d, txt)
		}
	default:
		rf, formatter, err := grpcurl.RequestParserAndFormatter(grpcurl.FormatJSON, src, strings.NewReader(c.data), grpcurl.FormatOptions{})
		if err != nil {
			return "", err
		}
		h := &grpcurl.DefaultEventHandler{Out: &out, Formatter: formatter}
		if err := grpcurl.InvokeRPC(ctx, src, cc, c.symbol, c.headers, h, rf.Next); err != nil {
			return out.String(), err
		}
		if h.Status.Code() != codes.OK {
			return out.String(), fmt.Errorf("%s: %s", h.Status.Code(), h.Status.Message())
		}
	}
	return out.String(), nil
}

// writeFile writes data to dir/name (test certificates).
func writeFile(dir, name string, data []byte) error {
	return os.WriteFile(filepath.Join(dir, name), data, 0o600)
}
