package config

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"unicode/utf8"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/lexer"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// MaxFileSize is the largest config file Load and Parse accept. A real
// config is a few KiB; the cap bounds the work a hostile file can cause.
const MaxFileSize = 4 << 20

// Caps on the shape of a file, checked on its tokens before parsing (see
// checkTokens). The schema nests six levels deep and its widest mapping
// has 17 keys.
const (
	maxDepth     = 200  // indentation columns, "- - -" on a line, brackets
	maxKeys      = 1000 // keys of one block mapping
	maxDocuments = 16   // "---" headers
)

// DefaultFile is the File name of the embedded default config.
const DefaultFile = "(default)"

// defaultYAML is the embedded default config, a string so nothing can
// modify it.
//
//go:embed default.yaml
var defaultYAML string

// defaultScripts holds the default config's scripts under defaultscripts/.
//
//go:embed defaultscripts
var defaultScripts embed.FS

// Option changes how Parse and Load read a config.
type Option func(*options)

type options struct {
	lookup     func(string) (string, bool)
	baseDir    string
	hasBaseDir bool
	scripts    fs.FS
	scriptsDir string
}

// WithEnv sets the lookup used to expand ${VAR} references, in place of
// os.LookupEnv. Tests use it, and so does the binary to hand the addresses
// of its demo upstreams to the default config.
func WithEnv(lookup func(string) (string, bool)) Option {
	return func(o *options) {
		if lookup != nil {
			o.lookup = lookup
		}
	}
}

// WithScripts makes fsys the file system tenant scripts are read from,
// instead of lua.scripts_dir; dir names it in messages and in
// Config.ScriptsDir.
func WithScripts(fsys fs.FS, dir string) Option {
	return func(o *options) {
		o.scripts = fsys
		o.scriptsDir = dir
	}
}

// WithBaseDir sets the directory relative paths in the config (such as
// lua.scripts_dir) resolve against. The default is the directory of the
// config file.
func WithBaseDir(dir string) Option {
	return func(o *options) {
		o.baseDir = dir
		o.hasBaseDir = true
	}
}

// Load reads, parses, expands, defaults and validates the config file at
// path. Config.File is path as given; scripts are read from lua.scripts_dir
// resolved against the file's directory.
//
// Every error is an ErrorList holding all the problems found, each
// positioned in the file. A file that cannot be read gives a one-element
// list whose *Error wraps the cause, so errors.Is(err, fs.ErrNotExist)
// works.
func Load(path string) (*Config, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, ErrorList{err}
	}
	return Parse(path, data)
}

// readFile reads at most MaxFileSize+1 bytes, so a huge file (or
// /dev/zero) is refused without being read whole.
func readFile(path string) ([]byte, *Error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &Error{File: path, Msg: fmt.Sprintf("cannot read config: %v", unwrapPathError(err)), err: err}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, &Error{File: path, Msg: fmt.Sprintf("cannot read config: %v", unwrapPathError(err)), err: err}
	}
	return data, nil
}

// unwrapPathError drops the "open PATH: " of a *fs.PathError; the message
// names the file already.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Default returns the embedded default config: a Lua "hello" tenant and a
// round-robin "demo" tenant over three local upstreams, whose addresses
// come from KEYSTONE_DEMO_1..3 (see WithEnv). Its File and ScriptsDir are
// "(default)".
func Default(opts ...Option) (*Config, error) {
	sub, err := fs.Sub(defaultScripts, "defaultscripts")
	if err != nil {
		// Unreachable: the directory is embedded at build time.
		return nil, ErrorList{{File: DefaultFile, Msg: err.Error(), err: err}}
	}
	opts = append([]Option{WithScripts(sub, DefaultFile)}, opts...)
	return Parse(DefaultFile, []byte(defaultYAML), opts...)
}

// Parse is Load for a config already in memory. file names it in errors
// and in Config.File, and its directory is the base for relative paths
// unless WithBaseDir says otherwise.
func Parse(file string, data []byte, opts ...Option) (*Config, error) {
	o := options{lookup: os.LookupEnv}
	for _, opt := range opts {
		opt(&o)
	}
	if !o.hasBaseDir {
		o.baseDir = filepath.Dir(file)
	}
	errs := newErrorSet(file)
	cfg := parse(errs, file, data, &o)
	if !errs.empty() {
		return nil, errs.sorted()
	}
	return cfg, nil
}

// parse does the work of Parse, recording problems in errs.
func parse(errs *errorSet, file string, data []byte, o *options) *Config {
	if len(data) > MaxFileSize {
		errs.add(0, 0, "", "config is larger than %d bytes", MaxFileSize)
		return nil
	}
	// goccy keeps a UTF-8 byte order mark as part of the first key
	// ("\ufeffserver"); editors on Windows still write one.
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	if !utf8.Valid(data) {
		line, col := invalidUTF8At(data)
		errs.add(line, col, "", "expected UTF-8 text, got an invalid byte sequence")
		return nil
	}
	body := parseYAML(errs, data)
	if body == nil {
		return nil
	}

	d := newDecoder(errs, o.lookup)
	d.baseDir = o.baseDir
	if !d.prepare(body) {
		return nil
	}
	cfg := defaultConfig()
	root, _, ok := d.resolve("", body)
	if !ok {
		return nil
	}
	if _, isMap := root.(*ast.MappingNode); !isMap {
		errs.add(nodePos(root).line, nodePos(root).col, "",
			"expected a mapping of settings (server, tenants, ...), got %s", describeAny(root))
		return nil
	}
	d.decode("", nil, root, reflect.ValueOf(&cfg).Elem())
	finishDefaults(&cfg, d.isSet)

	cfg.File = file
	cfg.pos = d.pos
	openScripts(&cfg, d, o)
	validate(&cfg, d)
	validateTLS(&cfg, d, o.baseDir)
	cfg.Files = d.files
	return &cfg
}

// parseYAML tokenizes and parses data, checks it holds exactly one
// document and returns that document's root node. It returns nil after
// recording an error.
func parseYAML(errs *errorSet, data []byte) (root ast.Node) {
	defer func() {
		// goccy/go-yaml is fuzzed by its authors but not promised
		// panic-free; a config loader must not crash the gateway on a
		// reload, so a panic in the parser becomes an error.
		if r := recover(); r != nil {
			errs.add(0, 0, "", "cannot parse YAML: internal parser error: %v", r)
			root = nil
		}
	}()
	tokens := lexer.Tokenize(string(data))
	if tk, msg := checkTokens(tokens); tk != nil {
		p := tokenPos(tk)
		errs.add(p.line, p.col, "", "%s", msg)
		return nil
	}
	// Duplicate keys are reported by the decoder, with their field path
	// and alongside every other problem, rather than as the parser's
	// first and only error.
	f, err := parser.Parse(tokens, 0, parser.AllowDuplicateMapKey())
	if err != nil {
		addYAMLError(errs, err)
		return nil
	}
	var docs []*ast.DocumentNode
	for _, doc := range f.Docs {
		if doc != nil && doc.Body != nil {
			docs = append(docs, doc)
		}
	}
	switch {
	case len(docs) == 0:
		errs.add(0, 0, "", "empty config")
		return nil
	case len(docs) > 1:
		p := tokenPos(docs[1].Start)
		if p.line == 0 {
			p = nodePos(docs[1].Body)
		}
		errs.add(p.line, p.col, "", "expected one YAML document, found a second one")
		return nil
	}
	return docs[0].Body
}

// checkTokens rejects, before parsing, the shapes that goccy's parser
// handles in time and memory quadratic in their size (measured on v1.19.2:
// 20,000 keys in one block mapping or 20,000 documents take 2s and gigabytes
// of garbage; 100,000 nesting levels take tens of gigabytes). It returns
// the offending token and what is wrong, or nil. The caps sit far above
// any real config.
func checkTokens(tokens token.Tokens) (*token.Token, string) {
	// Depth is over-estimated as the indentation of the token's line,
	// plus the block indicators ("- ", "? ", ": ") before it on that
	// line, plus the open flow brackets. Cheap, and the shipped configs
	// stay under 20.
	flow, inline, line, docs := 0, 0, 0, 0
	// keys counts the keys of the open block mappings, one entry per
	// indentation column, innermost last.
	type mapping struct{ col, keys int }
	var open []mapping
	var prev *token.Token
	for _, tk := range tokens {
		if tk == nil || tk.Position == nil {
			continue
		}
		col := tk.Position.Column
		if tk.Position.Line != line {
			line = tk.Position.Line
			inline = col - 1
			for len(open) > 0 && open[len(open)-1].col > col {
				open = open[:len(open)-1]
			}
		}
		switch tk.Type {
		case token.DocumentHeaderType:
			if docs++; docs > maxDocuments {
				return tk, fmt.Sprintf("expected one YAML document, found more than %d", maxDocuments)
			}
		case token.SequenceStartType, token.MappingStartType:
			flow++
		case token.SequenceEndType, token.MappingEndType:
			if flow > 0 {
				flow--
			}
		case token.SequenceEntryType, token.MappingKeyType, token.MappingValueType:
			// Inside brackets the bracket count is the depth: a
			// one-line list of 300 {url: ...} mappings is shallow.
			if flow > 0 {
				break
			}
			inline++
			if tk.Type != token.MappingValueType || prev == nil || prev.Position == nil {
				break
			}
			// A block mapping's keys share the column of its first
			// key, with nothing less indented between them.
			kc := prev.Position.Column
			for len(open) > 0 && open[len(open)-1].col > kc {
				open = open[:len(open)-1]
			}
			if len(open) > 0 && open[len(open)-1].col == kc {
				if open[len(open)-1].keys++; open[len(open)-1].keys > maxKeys {
					return prev, fmt.Sprintf("expected at most %d keys in one mapping", maxKeys)
				}
			} else {
				open = append(open, mapping{col: kc, keys: 1})
			}
		}
		if flow+inline > maxDepth {
			return tk, fmt.Sprintf("nesting is deeper than %d levels", maxDepth)
		}
		prev = tk
	}
	return nil, ""
}

// addYAMLError records a goccy error at its token's position.
func addYAMLError(errs *errorSet, err error) {
	var ye interface {
		GetToken() *token.Token
		GetMessage() string
	}
	if errors.As(err, &ye) {
		p := tokenPos(ye.GetToken())
		errs.add(p.line, p.col, "", "syntax error: %s", ye.GetMessage())
		return
	}
	errs.add(0, 0, "", "syntax error: %v", err)
}

// invalidUTF8At returns the 1-based line and column of the first byte
// that is not valid UTF-8.
func invalidUTF8At(data []byte) (line, col int) {
	line, col = 1, 1
	for len(data) > 0 {
		r, size := utf8.DecodeRune(data)
		if r == utf8.RuneError && size <= 1 {
			return line, col
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
		data = data[size:]
	}
	return line, col
}

// openScripts sets Config.Scripts and ScriptsDir: the WithScripts file
// system, or lua.scripts_dir resolved against the base directory.
func openScripts(c *Config, d *decoder, o *options) {
	if o.scripts != nil {
		c.Scripts, c.ScriptsDir = o.scripts, o.scriptsDir
		return
	}
	dir := o.baseDir
	if c.Lua.ScriptsDir != "" {
		dir = c.Lua.ScriptsDir
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(o.baseDir, dir)
		}
		// A missing directory is reported once, here, rather than as
		// one "script not found" per tenant.
		if st, err := os.Stat(dir); err != nil {
			d.errorAt("lua.scripts_dir", "scripts directory %q does not exist", dir)
			d.markBad("lua.scripts_dir")
		} else if !st.IsDir() {
			d.errorAt("lua.scripts_dir", "expected a directory, got file %q", dir)
			d.markBad("lua.scripts_dir")
		}
	}
	// The file system is rooted at the absolute path, so a later chdir
	// cannot move it; ScriptsDir stays as the user wrote it, for messages.
	root := dir
	if abs, err := filepath.Abs(dir); err == nil {
		root = abs
	}
	c.Scripts, c.ScriptsDir = os.DirFS(root), dir
}

// isSet reports whether a value was written for path.
func (d *decoder) isSet(path string) bool { return d.pos[path].set }

// TenantByName returns the tenant named name, or nil.
func (c *Config) TenantByName(name string) *Tenant {
	for i := range c.Tenants {
		if c.Tenants[i].Name == name {
			return &c.Tenants[i]
		}
	}
	return nil
}

// Errorf returns an *Error about the field at path ("tenants[0].script"),
// positioned where that field (or its closest written parent) is in
// c.File. Packages that check a config further than Load does (compiling
// a tenant's script, binding the listener) use it to report problems the
// way Load does:
//
//	return config.ErrorList{cfg.Errorf("tenants[0].script", "compile %s: %v", t.Script, err)}
func (c *Config) Errorf(path, format string, args ...any) *Error {
	p := lookupPos(c.pos, path)
	return &Error{File: c.File, Line: p.line, Col: p.col, Path: path, Msg: fmt.Sprintf(format, args...)}
}

// lookupPos finds where path was written, or its closest written parent:
// a default that was never written has no position of its own.
func lookupPos(pos map[string]fieldPos, path string) position {
	for {
		if fp, ok := pos[path]; ok {
			if fp.val.line > 0 {
				return fp.val
			}
			if fp.key.line > 0 {
				return fp.key
			}
		}
		// The document root is no place for a field it lacks.
		if path = parentPath(path); path == "" {
			return position{}
		}
	}
}
