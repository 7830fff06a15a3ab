package config

import (
	"fmt"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/token"
)

// Why our own walk of the goccy AST instead of yaml.NodeToValue with
// yaml.DisallowUnknownField: the goccy decoder stops at the first problem,
// and a config check should list all of them. Walking the AST ourselves also
// lets us expand ${VAR} per scalar (keeping the scalar's position), tell an
// explicit false from an absent key (defaults that are true), resolve
// aliases under a budget, and record where every field was written, so that
// validation errors found later point at the right line.

// maxAliasNodes caps how many nodes aliases may add to the document. A
// "billion laughs" file (anchors that alias each other nine deep) is a few
// hundred bytes that expand to 10^9 nodes; real configs share a few blocks
// of a dozen nodes each.
const maxAliasNodes = 100_000

// maxMergeDepth caps chains of merge keys (<<: *a where a merges *b, ...).
const maxMergeDepth = 32

// position is a 1-based line and column; 0:0 means unknown.
type position struct{ line, col int }

// fieldPos records where a field was written and whether a value was
// assigned to it (a null value leaves the default in place).
type fieldPos struct {
	key, val position
	set      bool
}

// decoder turns the AST of one document into a Config, collecting errors.
type decoder struct {
	errs   *errorSet
	lookup func(string) (string, bool)

	// pos maps a field path ("tenants[1].upstreams[0].url") to where it
	// was written.
	pos map[string]fieldPos

	// bad holds the paths that failed to decode, so validation does not
	// report a second, derived error for the same value; badUnder holds
	// every parent of such a path.
	bad, badUnder map[string]bool

	// aliases maps each alias to the node its anchor names, resolved in
	// document order by prepare.
	aliases map[*ast.AliasNode]ast.Node

	// baseDir is where files named by the config (key files) are
	// resolved.
	baseDir string

	// files are the files named by the config that were read, in order,
	// without repeats: Config.Files.
	files []string
}

// noteFile records path as one of Config.Files.
func (d *decoder) noteFile(path string) {
	if !slices.Contains(d.files, path) {
		d.files = append(d.files, path)
	}
}

// readFile notes path as one of Config.Files and reads it.
func (d *decoder) readFile(path string) ([]byte, error) {
	d.noteFile(path)
	return os.ReadFile(path)
}

func newDecoder(errs *errorSet, lookup func(string) (string, bool)) *decoder {
	return &decoder{
		errs:     errs,
		lookup:   lookup,
		pos:      make(map[string]fieldPos),
		bad:      make(map[string]bool),
		badUnder: make(map[string]bool),
		aliases:  make(map[*ast.AliasNode]ast.Node),
	}
}

// errorf records an error at p for path and marks path as bad.
func (d *decoder) errorf(p position, path, format string, args ...any) {
	d.markBad(path)
	d.errs.add(p.line, p.col, path, format, args...)
}

// markBad records that path failed to decode.
func (d *decoder) markBad(path string) {
	if path == "" {
		return
	}
	d.bad[path] = true
	for p := parentPath(path); p != "" && !d.badUnder[p]; p = parentPath(p) {
		d.badUnder[p] = true
	}
}

// parentPath strips the last field or index from a path:
// "tenants[1].upstreams" → "tenants[1]" → "tenants" → "".
func parentPath(path string) string {
	if i := strings.LastIndexAny(path, ".["); i >= 0 {
		return path[:i]
	}
	return ""
}

// tokenPos returns a token's position, 0:0 for none.
func tokenPos(tk *token.Token) position {
	if tk == nil || tk.Position == nil {
		return position{}
	}
	return position{tk.Position.Line, tk.Position.Column}
}

// nodePos returns where a node's text starts. goccy positions a block
// mapping at its first ":", so a block mapping is placed at its first key
// (a flow mapping at its "{").
func nodePos(n ast.Node) position {
	switch n := n.(type) {
	case nil:
		return position{}
	case *ast.MappingNode:
		if !n.IsFlowStyle && len(n.Values) > 0 && n.Values[0] != nil && n.Values[0].Key != nil {
			return tokenPos(n.Values[0].Key.GetToken())
		}
		return tokenPos(n.Start)
	case *ast.MappingValueNode:
		if n.Key != nil {
			return tokenPos(n.Key.GetToken())
		}
		return tokenPos(n.Start)
	case *ast.AnchorNode:
		return tokenPos(n.Start)
	}
	return tokenPos(n.GetToken())
}

// prepare resolves every alias to its anchor's node, in document order (an
// alias names the closest anchor of that name before it), and checks the
// size the aliases expand the document to. An anchor is registered after
// its own content, so an alias can never reach the node that contains it:
// the resolved graph has no cycles, and every walk over it ends.
func (d *decoder) prepare(root ast.Node) bool {
	anchors := make(map[string]ast.Node)
	sizes := make(map[ast.Node]int)
	var direct int
	var walk func(n ast.Node) int
	walk = func(n ast.Node) int {
		if n == nil {
			return 0
		}
		direct++
		switch n := n.(type) {
		case *ast.MappingNode:
			total := 1
			for _, mv := range n.Values {
				if mv == nil {
					continue
				}
				total = addSat(total, walk(mv.Key))
				total = addSat(total, walk(mv.Value))
			}
			return total
		case *ast.SequenceNode:
			total := 1
			for _, v := range n.Values {
				total = addSat(total, walk(v))
			}
			return total
		case *ast.MappingValueNode:
			return addSat(addSat(1, walk(n.Key)), walk(n.Value))
		case *ast.MappingKeyNode:
			return addSat(1, walk(n.Value))
		case *ast.TagNode:
			return addSat(1, walk(n.Value))
		case *ast.AnchorNode:
			size := walk(n.Value)
			if n.Name != nil && n.Value != nil {
				anchors[n.Name.GetToken().Value] = n.Value
				sizes[n.Value] = size
			}
			return size
		case *ast.AliasNode:
			name := ""
			if n.Value != nil && n.Value.GetToken() != nil {
				name = n.Value.GetToken().Value
			}
			target, ok := anchors[name]
			if !ok {
				d.errorf(nodePos(n), "", "unknown alias %q (an alias must follow its anchor &%s)", name, name)
				return 1
			}
			d.aliases[n] = target
			return sizes[target]
		}
		return 1
	}
	expanded := walk(root)
	if expanded-direct > maxAliasNodes {
		d.errs.add(0, 0, "", "aliases expand the document by more than %d nodes", maxAliasNodes)
		return false
	}
	return d.errs.empty()
}

// addSat adds two sizes, saturating well below overflow.
func addSat(a, b int) int {
	const max = 1 << 40
	if a > max-b {
		return max
	}
	return a + b
}

// resolve looks through anchors, aliases and tags to the node holding the
// value. forceStr reports a !!str tag; other tags are errors.
func (d *decoder) resolve(path string, n ast.Node) (_ ast.Node, forceStr, ok bool) {
	// Anchors, aliases and tags wrap one another at most a few levels
	// deep in valid YAML; the bound only guards against surprises.
	for range 16 {
		switch v := n.(type) {
		case *ast.AnchorNode:
			n = v.Value
		case *ast.AliasNode:
			n = d.aliases[v]
		case *ast.MappingValueNode:
			// goccy has returned a lone "key: value" as this node
			// rather than as a mapping of one entry in some versions.
			n = ast.Mapping(v.Start, false, v)
		case *ast.TagNode:
			tag := ""
			if v.Start != nil {
				tag = v.Start.Value
			}
			if tag != "!!str" {
				d.errorf(nodePos(v), path, "unsupported tag %q (only !!str is supported)", tag)
				return nil, false, false
			}
			forceStr = true
			n = v.Value
		default:
			return n, forceStr, true
		}
	}
	d.errorf(nodePos(n), path, "too many nested anchors, aliases or tags")
	return nil, false, false
}

// kind classifies a scalar after ${VAR} expansion.
type kind int

const (
	kindNull kind = iota
	kindBool
	kindInt
	kindFloat
	kindString
)

// scalar is a decoded YAML scalar.
type scalar struct {
	kind kind
	text string // as written, after ${VAR} expansion
	// plain is an unquoted string: "99999999999999999999" is a number
	// too large for goccy, not a string the user quoted.
	plain bool
	// fromEnv is a quoted string that held a ${VAR} reference.
	fromEnv  bool
	b        bool
	i        int64
	overflow bool // an integer beyond int64
	f        float64
	p        position
}

// describe renders s for "got ..." in messages: strings quoted, numbers and
// booleans as written.
func (s scalar) describe() string {
	switch s.kind {
	case kindNull:
		return "null"
	case kindString:
		return strconv.Quote(clip(s.text))
	}
	return clip(s.text)
}

// describeNode renders a non-scalar node for "got ...".
func describeNode(n ast.Node) string {
	switch n.(type) {
	case *ast.MappingNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	}
	return "an unsupported value"
}

// scalarOf decodes a scalar node, expanding ${VAR} in strings. ok is false
// for a mapping or list, and when expansion failed (already reported).
func (d *decoder) scalarOf(path string, n ast.Node, forceStr bool) (s scalar, ok bool) {
	s.p = nodePos(n)
	tk := n.GetToken()
	switch n := n.(type) {
	case *ast.NullNode:
		s.kind, s.text = kindNull, "null"
	case *ast.BoolNode:
		s.kind, s.text, s.b = kindBool, tk.Value, n.Value
	case *ast.IntegerNode:
		s.kind, s.text = kindInt, tk.Value
		setInt(&s, n.Value)
	case *ast.FloatNode:
		s.kind, s.text, s.f = kindFloat, tk.Value, n.Value
	case *ast.InfinityNode:
		s.kind, s.text, s.f = kindFloat, tk.Value, n.Value
	case *ast.NanNode:
		s.kind, s.text, s.f = kindFloat, tk.Value, math.NaN()
	case *ast.StringNode:
		s.kind, s.text = kindString, n.Value
		s.plain = tk != nil && tk.Type == token.StringType && !forceStr
		return d.expand(path, s)
	case *ast.LiteralNode:
		s.kind = kindString
		if n.Value != nil {
			s.text = n.Value.Value
		}
		return d.expand(path, s)
	default:
		return s, false
	}
	if forceStr {
		s.kind = kindString
	}
	return s, true
}

// setInt stores goccy's int64 or uint64 value of an integer.
func setInt(s *scalar, v any) {
	switch v := v.(type) {
	case int64:
		s.i = v
	case uint64:
		if v > math.MaxInt64 {
			s.overflow = true
		} else {
			s.i = int64(v)
		}
	default:
		s.overflow = true
	}
}

// expand replaces ${VAR} references in a string scalar. A plain
// (unquoted) scalar that held a reference is then typed again by YAML's
// rules, so "max_conns: ${MAXC:-512}" decodes as the integer 512 and
// "max_conns: ${MAXC}" with MAXC unset as null (the default applies). A
// quoted scalar stays a string, as quoting means in YAML.
func (d *decoder) expand(path string, s scalar) (scalar, bool) {
	if !strings.Contains(s.text, "$") {
		return s, true
	}
	text, err := expandEnv(s.text, d.lookup)
	if err != nil {
		d.errorf(s.p, path, "%s", err.Error())
		return s, false
	}
	if !s.plain || text == s.text {
		s.fromEnv = text != s.text
		s.text = text
		return s, true
	}
	s.text = text
	if text == "" {
		s.kind = kindNull
		return s, true
	}
	return retype(s), true
}

// retype types a string scalar by YAML's rules for plain scalars: "512"
// becomes an integer, "true" a bool, "0.5" a float, "null" a null.
func retype(s scalar) scalar {
	text := s.text
	tk := token.New(text, text, &token.Position{Line: s.p.line, Column: s.p.col})
	switch tk.Type {
	case token.NullType:
		s.kind = kindNull
	case token.BoolType:
		s.kind = kindBool
		s.b, _ = strconv.ParseBool(strings.ToLower(text))
	case token.IntegerType, token.BinaryIntegerType, token.OctetIntegerType, token.HexIntegerType:
		s.kind = kindInt
		if num := token.ToNumber(text); num != nil {
			setInt(&s, num.Value)
		} else {
			s.overflow = true
		}
	case token.FloatType:
		s.kind = kindFloat
		if num := token.ToNumber(text); num != nil {
			s.f, _ = num.Value.(float64)
		}
	case token.InfinityType:
		s.kind = kindFloat
		s.f = math.Inf(1)
		if strings.HasPrefix(text, "-") {
			s.f = math.Inf(-1)
		}
	case token.NanType:
		s.kind, s.f = kindFloat, math.NaN()
	}
	return s
}

// looksInteger reports whether a plain string is a decimal integer that
// goccy left as a string because it does not fit in 64 bits.
func looksInteger(s string) bool {
	t := strings.TrimPrefix(strings.TrimPrefix(s, "-"), "+")
	if t == "" {
		return false
	}
	for i := 0; i < len(t); i++ {
		if (t[i] < '0' || t[i] > '9') && t[i] != '_' {
			return false
		}
	}
	return true
}

var (
	durationType = reflect.TypeFor[Duration]()
	sizeType     = reflect.TypeFor[Size]()
	statusType   = reflect.TypeFor[StatusRange]()
)

// decode decodes node n into v, the field at path. key is the key token
// the value was written under (nil for list items), used to place errors
// about an empty value.
func (d *decoder) decode(path string, key *token.Token, n ast.Node, v reflect.Value) {
	keyPos := tokenPos(key)
	n, forceStr, ok := d.resolve(path, n)
	if !ok {
		return
	}
	p := nodePos(n)
	if key == nil {
		keyPos = p
	}
	fp := fieldPos{key: keyPos, val: p}
	if n == nil {
		d.pos[path] = fp
		return
	}
	// A null written as nothing at all ("health_check:") sits at the
	// colon; the key is where a reader looks.
	nothing := "null"
	if tk := n.GetToken(); tk != nil && tk.Type == token.ImplicitNullType {
		fp.val = keyPos
		p = keyPos
		nothing = "nothing"
	}
	d.pos[path] = fp

	t := v.Type()
	switch {
	case t == durationType || t == sizeType || t == statusType:
		d.decodeUnit(path, n, forceStr, v)
	case t.Kind() == reflect.Struct:
		if isNull(n) {
			return // an empty section keeps its defaults
		}
		d.decodeStruct(path, n, v)
	case t.Kind() == reflect.Pointer:
		if isNull(n) {
			d.errorf(p, path, "expected a mapping (write {} to enable with the defaults), got %s", nothing)
			return
		}
		ptr := newDefault(t.Elem())
		d.decodeStruct(path, n, ptr.Elem())
		v.Set(ptr)
	case t.Kind() == reflect.Slice:
		d.decodeSlice(path, n, v)
	case t.Kind() == reflect.Map:
		d.decodeMap(path, n, v)
	default:
		d.decodeScalar(path, n, forceStr, v)
	}
	if !d.bad[path] {
		fp.set = !isNull(n)
		d.pos[path] = fp
	}
}

// isNull reports whether n is a null scalar (an empty value or null/~).
func isNull(n ast.Node) bool {
	_, ok := n.(*ast.NullNode)
	return ok
}

// entry is one key of a mapping after merge keys are applied.
type entry struct {
	key   string
	keyTk *token.Token
	val   ast.Node
}

// entries lists the keys of m: its own first, then those merged in with
// "<<" that m does not set itself (YAML merge key semantics: the mapping's
// own keys override merged ones; earlier merged mappings override later).
func (d *decoder) entries(path string, m *ast.MappingNode, depth int) []entry {
	if depth > maxMergeDepth {
		d.errorf(nodePos(m), path, "merge keys nested more than %d deep", maxMergeDepth)
		return nil
	}
	var own []entry
	var merged []ast.Node
	first := make(map[string]*token.Token)
	for _, mv := range m.Values {
		if mv == nil || mv.Key == nil {
			continue
		}
		if _, ok := mv.Key.(*ast.MergeKeyNode); ok {
			merged = append(merged, mv.Value)
			continue
		}
		keyNode, _, ok := d.resolve(path, mv.Key)
		if !ok {
			continue
		}
		var name string
		switch k := keyNode.(type) {
		case *ast.StringNode:
			name = k.Value
		case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.NullNode,
			*ast.InfinityNode, *ast.NanNode:
			name = k.GetToken().Value
		case *ast.MappingKeyNode:
			d.errorf(nodePos(mv.Key), path, "complex keys (\"? key\") are not supported")
			continue
		default:
			d.errorf(nodePos(mv.Key), path, "expected a string key, got %s", describeAny(keyNode))
			continue
		}
		tk := mv.Key.GetToken()
		if prev, dup := first[name]; dup {
			d.errorf(tokenPos(tk), path, "duplicate key %q (first defined at line %d)", clip(name), tokenPos(prev).line)
			continue
		}
		first[name] = tk
		own = append(own, entry{key: name, keyTk: tk, val: mv.Value})
	}
	for _, src := range merged {
		for _, e := range d.mergeSources(path, src, depth) {
			if _, dup := first[e.key]; dup {
				continue
			}
			first[e.key] = e.keyTk
			own = append(own, e)
		}
	}
	return own
}

// mergeSources returns the entries a "<<" value brings in: one mapping or
// a list of mappings, usually aliases.
func (d *decoder) mergeSources(path string, src ast.Node, depth int) []entry {
	n, _, ok := d.resolve(path, src)
	if !ok {
		return nil
	}
	switch n := n.(type) {
	case *ast.MappingNode:
		return d.entries(path, n, depth+1)
	case *ast.SequenceNode:
		var out []entry
		seen := make(map[string]bool)
		for _, item := range n.Values {
			m, _, ok := d.resolve(path, item)
			if !ok {
				continue
			}
			mm, isMap := m.(*ast.MappingNode)
			if !isMap {
				d.errorf(nodePos(item), path, "expected a mapping to merge, got %s", describeAny(m))
				continue
			}
			for _, e := range d.entries(path, mm, depth+1) {
				if !seen[e.key] {
					seen[e.key] = true
					out = append(out, e)
				}
			}
		}
		return out
	}
	d.errorf(nodePos(src), path, "expected a mapping or a list of mappings to merge, got %s", describeAny(n))
	return nil
}

// describeAny renders any node for "got ...".
func describeAny(n ast.Node) string {
	switch v := n.(type) {
	case *ast.MappingNode, *ast.SequenceNode:
		return describeNode(n)
	case nil:
		return "nothing"
	case *ast.StringNode:
		return strconv.Quote(clip(v.Value))
	case *ast.LiteralNode:
		if v.Value != nil {
			return strconv.Quote(clip(v.Value.Value))
		}
	}
	if tk := n.GetToken(); tk != nil {
		return clip(tk.Value)
	}
	return "an unsupported value"
}

// field is one YAML key of a struct.
type field struct {
	key   string
	index int
}

// fieldsOf lists the YAML keys of a struct type in declaration order.
func fieldsOf(t reflect.Type) []field {
	var out []field
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		out = append(out, field{key: name, index: i})
	}
	return out
}

// decodeStruct decodes a mapping into the fields of struct v, which holds
// the defaults already.
func (d *decoder) decodeStruct(path string, n ast.Node, v reflect.Value) {
	m, ok := n.(*ast.MappingNode)
	if !ok {
		d.errorf(nodePos(n), path, "expected a mapping, got %s", describeAny(n))
		return
	}
	fields := fieldsOf(v.Type())
	for _, e := range d.entries(path, m, 0) {
		// Top-level keys starting with "x-" are for the user: a place to
		// define anchors ("x-defaults: &defaults ..."), as docker-compose
		// allows.
		if path == "" && strings.HasPrefix(e.key, "x-") {
			continue
		}
		idx := -1
		for _, f := range fields {
			if f.key == e.key {
				idx = f.index
				break
			}
		}
		if idx < 0 {
			if d.errs.full {
				continue // the suggestion is quadratic; skip it when unread
			}
			keys := make([]string, len(fields))
			for i, f := range fields {
				keys[i] = f.key
			}
			if s := Suggest(e.key, keys); s != "" {
				d.errs.add(tokenPos(e.keyTk).line, tokenPos(e.keyTk).col, path,
					"unknown field %q (did you mean %q?)", clip(e.key), s)
			} else {
				d.errs.add(tokenPos(e.keyTk).line, tokenPos(e.keyTk).col, path,
					"unknown field %q", clip(e.key))
			}
			continue
		}
		d.decode(joinPath(path, e.key), e.keyTk, e.val, v.Field(idx))
	}
}

// joinPath appends a key to a field path.
func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// decodeSlice decodes a list, replacing the default list entirely. An
// empty value keeps the default.
func (d *decoder) decodeSlice(path string, n ast.Node, v reflect.Value) {
	if isNull(n) {
		return
	}
	seq, ok := n.(*ast.SequenceNode)
	if !ok {
		d.errorf(nodePos(n), path, "expected a list, got %s", describeAny(n))
		return
	}
	out := reflect.MakeSlice(v.Type(), len(seq.Values), len(seq.Values))
	for i, item := range seq.Values {
		elem := newDefault(v.Type().Elem()).Elem()
		d.decode(fmt.Sprintf("%s[%d]", path, i), nil, item, elem)
		out.Index(i).Set(elem)
	}
	v.Set(out)
}

// decodeScalar decodes a string, bool, int or float64 field. A null keeps
// the default.
func (d *decoder) decodeScalar(path string, n ast.Node, forceStr bool, v reflect.Value) {
	s, ok := d.scalarOf(path, n, forceStr)
	if !ok {
		if !d.bad[path] {
			d.errorf(nodePos(n), path, "expected %s, got %s", expectedKind(v.Kind()), describeAny(n))
		}
		return
	}
	if s.kind == kindNull {
		return
	}
	if s.fromEnv && v.Kind() != reflect.String {
		// Inside a flow mapping a reference must be quoted ("{ratio:
		// "${RATIO}"}", since "}" would end the mapping), yet it names
		// a number all the same.
		s = retype(s)
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s.text)
	case reflect.Bool:
		if s.kind != kindBool {
			d.errorf(s.p, path, "expected true or false, got %s", s.describe())
			return
		}
		v.SetBool(s.b)
	case reflect.Int:
		switch {
		case s.kind == kindInt && !s.overflow && s.i >= math.MinInt && s.i <= math.MaxInt:
			v.SetInt(s.i)
		case s.kind == kindInt || s.plain && looksInteger(s.text):
			d.errorf(s.p, path, "integer %s is out of range", clip(s.text))
		default:
			d.errorf(s.p, path, "expected an integer, got %s", s.describe())
		}
	case reflect.Float64:
		f := s.f
		switch {
		case s.kind == kindInt && !s.overflow:
			f = float64(s.i)
		case s.kind == kindFloat:
		case s.plain:
			// YAML 1.2 reads "1e-3" as a float; goccy keeps it a string.
			var err error
			if f, err = strconv.ParseFloat(s.text, 64); err != nil {
				d.errorf(s.p, path, "expected a number, got %s", s.describe())
				return
			}
		default:
			d.errorf(s.p, path, "expected a number, got %s", s.describe())
			return
		}
		if math.IsInf(f, 0) || math.IsNaN(f) {
			d.errorf(s.p, path, "expected a finite number, got %s", clip(s.text))
			return
		}
		v.SetFloat(f)
	default:
		d.errorf(s.p, path, "unsupported field type %s", v.Type())
	}
}

// expectedKind names what a field of kind k takes, for messages.
func expectedKind(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int:
		return "an integer"
	case reflect.Float64:
		return "a number"
	}
	return "a value"
}

// decodeUnit decodes a Duration, Size or StatusRange.
func (d *decoder) decodeUnit(path string, n ast.Node, forceStr bool, v reflect.Value) {
	t := v.Type()
	s, ok := d.scalarOf(path, n, forceStr)
	if !ok {
		if !d.bad[path] {
			what := map[reflect.Type]string{
				durationType: `a duration such as "15s"`,
				sizeType:     `a size such as "10MiB"`,
				statusType:   `a status code or range such as "200-399"`,
			}[t]
			d.errorf(nodePos(n), path, "expected %s, got %s", what, describeAny(n))
		}
		return
	}
	if s.kind == kindNull {
		return
	}
	switch t {
	case durationType:
		switch {
		case s.kind == kindString:
			dur, err := parseDuration(s.text)
			if err != nil {
				d.errorf(s.p, path, "%s", err.Error())
				return
			}
			v.Set(reflect.ValueOf(dur))
		case s.kind == kindInt && !s.overflow && s.i == 0:
			v.Set(reflect.ValueOf(Duration(0)))
		default:
			d.errorf(s.p, path, "expected a duration such as \"15s\", got %s", clip(s.text))
		}
	case sizeType:
		switch {
		case s.kind == kindInt && !s.overflow && s.i >= 0:
			v.Set(reflect.ValueOf(Size(s.i)))
		case s.kind == kindInt && !s.overflow:
			d.errorf(s.p, path, "expected a size of at least 0, got %s", clip(s.text))
		case s.kind == kindInt || s.plain && looksInteger(s.text):
			d.errorf(s.p, path, "size %s is too large", clip(s.text))
		case s.kind == kindString:
			size, err := ParseSize(s.text)
			if err != nil {
				d.errorf(s.p, path, "%s", err.Error())
				return
			}
			v.Set(reflect.ValueOf(size))
		default:
			d.errorf(s.p, path, "expected a size such as \"10MiB\" or a byte count, got %s", s.describe())
		}
	case statusType:
		text := s.text
		if s.kind == kindInt {
			if s.overflow {
				text = "overflow"
			} else {
				text = strconv.FormatInt(s.i, 10)
			}
		} else if s.kind != kindString {
			d.errorf(s.p, path, "expected a status code such as 200, a range such as \"200-399\" or a class such as \"2xx\", got %s", s.describe())
			return
		}
		r, err := ParseStatusRange(text)
		if err != nil {
			d.errorf(s.p, path, "%s", err.Error())
			return
		}
		v.Set(reflect.ValueOf(r))
	}
}

// Suggest returns the candidate closest to s within edit distance 2, or ""
// when none is that close: the "did you mean" of config errors, and of the
// command line and script options, which share it. Ties go to the earlier
// candidate (declaration order, which puts the common keys first).
func Suggest(s string, candidates []string) string {
	best, bestDist := "", 3
	if len(s) > 64 {
		return "" // the distance is quadratic; no key is that long
	}
	for _, c := range candidates {
		if dist := levenshtein(s, c); dist < bestDist {
			best, bestDist = c, dist
		}
	}
	return best
}

// levenshtein is the edit distance between a and b, in bytes (keys are
// ASCII).
func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
