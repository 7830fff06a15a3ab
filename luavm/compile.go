package luavm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/keystone-gateway/keystone/config"
	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/parse"
)

// Program is a script compiled once: its main chunk as a
// *lua.FunctionProto, which every VM instantiates with
// L.NewFunctionFromProto. A Program is immutable and safe for concurrent
// use; gopher-lua never writes to a FunctionProto while running it.
type Program struct {
	fsys    fs.FS
	name    string
	dir     string // the directory fsys was opened from, for messages
	maxSize int    // MaxScriptSize, for the modules it requires
	proto   *lua.FunctionProto
	lines   int
}

// Name returns the script's path inside its file system.
func (p *Program) Name() string { return p.name }

// File returns the script's path as errors and logs print it: Name joined
// to the scripts directory it was loaded from, so an editor can open it.
func (p *Program) File() string { return p.file(p.name) }

// file returns the printed path of name, a path inside fsys.
func (p *Program) file(name string) string { return displayPath(p.dir, name) }

func displayPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return filepath.Join(dir, filepath.FromSlash(name))
}

// Compile reads name from fsys, parses and compiles it, with the default
// MaxScriptSize (config.DefaultLua). Errors are an ErrorList of one *Error,
// "FILE:LINE:COL: message" (the column only for parse errors: gopher-lua's
// compiler reports lines alone).
func Compile(fsys fs.FS, name string) (*Program, error) {
	return compile(fsys, name, "", int(config.DefaultLua().MaxScriptSize))
}

// compile is Compile with the scripts directory to print paths under and
// the size limit.
func compile(fsys fs.FS, name, dir string, maxSize int) (*Program, error) {
	p := &Program{fsys: fsys, name: name, dir: dir, maxSize: maxSize}
	if !fs.ValidPath(name) || name == "." {
		return nil, ErrorList{{File: name, Msg: fmt.Sprintf("invalid script path %q: expected a slash-separated path inside the scripts folder", name)}}
	}
	src, e := readScript(fsys, name, p.file(name), maxSize)
	if e != nil {
		return nil, ErrorList{e}
	}
	proto, cerr := compileChunk(src, p.file(name))
	if cerr != nil {
		return nil, ErrorList{cerr}
	}
	p.proto, p.lines = proto, bytes.Count(src, []byte{'\n'})+1
	return p, nil
}

// readScript reads a script or module, refusing one over maxSize bytes
// without reading more than that.
func readScript(fsys fs.FS, name, file string, maxSize int) ([]byte, *Error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, &Error{File: file, Msg: "cannot read script: " + unwrapPathError(err)}
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, int64(maxSize)+1))
	if err != nil {
		return nil, &Error{File: file, Msg: "cannot read script: " + unwrapPathError(err)}
	}
	if len(src) > maxSize {
		size := fmt.Sprintf("more than %d", maxSize)
		if st, err := f.Stat(); err == nil {
			size = strconv.FormatInt(st.Size(), 10)
		}
		return nil, &Error{File: file, Line: 1, Msg: fmt.Sprintf("script of %s bytes exceeds lua.max_script_size (%d bytes)", size, maxSize)}
	}
	return src, nil
}

// compileChunk parses and compiles src; name becomes the chunk's source
// name, the prefix of its runtime error positions.
func compileChunk(src []byte, name string) (*lua.FunctionProto, *Error) {
	chunk, err := parse.Parse(bytes.NewReader(src), name)
	if err != nil {
		var perr *parse.Error
		if errors.As(err, &perr) {
			e := &Error{File: name, Line: perr.Pos.Line, Col: perr.Pos.Column, Msg: perr.Message}
			if perr.Pos.Line == parse.EOF {
				e.Line, e.Col = bytes.Count(src, []byte{'\n'})+1, 0
				e.Msg += " at end of file"
			} else if perr.Token != "" {
				e.Msg += fmt.Sprintf(" near %q", perr.Token)
			}
			return nil, e
		}
		return nil, &Error{File: name, Msg: strings.TrimSpace(err.Error())}
	}
	if line, ok := checkConstants(chunk, maxConstants); !ok {
		return nil, constantsError(name, line)
	}
	proto, err := lua.Compile(chunk, name)
	if err != nil {
		var cerr *lua.CompileError
		if errors.As(err, &cerr) {
			return nil, &Error{File: name, Line: cerr.Line, Msg: cerr.Message}
		}
		return nil, &Error{File: name, Msg: err.Error()}
	}
	return proto, nil
}

func unwrapPathError(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// modulePath maps a require name ("lib.auth") to its file ("lib/auth.lua").
// Each dot-separated part must be letters, digits, '_' or '-', so names
// like "../x" or "/etc/passwd" cannot leave the scripts folder.
func modulePath(name string) (string, bool) {
	if name == "" || len(name) > 200 {
		return "", false
	}
	for _, part := range strings.Split(name, ".") {
		if part == "" {
			return "", false
		}
		for i := 0; i < len(part); i++ {
			c := part[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
				return "", false
			}
		}
	}
	p := strings.ReplaceAll(name, ".", "/") + ".lua"
	return p, fs.ValidPath(p)
}
