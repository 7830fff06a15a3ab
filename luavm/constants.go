package luavm

import (
	"fmt"
	"strconv"

	"github.com/yuin/gopher-lua/ast"
)

// maxConstants caps the distinct constants (literals, global, field and
// method names) of one Lua function. gopher-lua's compiler deduplicates
// constants by a linear search of those already seen (funcContext.
// ConstIndex), so compiling a function with n of them takes O(n²): a
// 10,000-entry table literal took 13s, 40,000 entries 79s, in `keystone
// check` and at every start. With at most 2048 per function, a 1 MiB
// script of such tables parsed and compiled in 1.3s on a 2-core machine
// at load average 11 (4096: 3.3s); data larger than that is split across
// functions or modules, each with its own constants.
const maxConstants = 2048

// checkConstants reports the first function of chunk with more than limit
// distinct constants, positioned at the constant that crosses the limit.
// It counts what gopher-lua puts in a function's constant table, plus
// every identifier (locals are not constants, but telling them from
// globals needs scopes; the few local names cannot matter here).
func checkConstants(chunk []ast.Stmt, limit int) (line int, ok bool) {
	c := constCounter{limit: limit}
	defer func() {
		if r := recover(); r != nil {
			if over, isOver := r.(constOverflow); isOver {
				line, ok = int(over), false
				return
			}
			panic(r)
		}
	}()
	c.function(chunk)
	return 0, true
}

type constOverflow int

type constCounter struct {
	limit int
	seen  map[string]struct{} // the current function's constants
}

func (c *constCounter) add(kind byte, v string, line int) {
	k := string(kind) + v
	if _, ok := c.seen[k]; ok {
		return
	}
	c.seen[k] = struct{}{}
	if len(c.seen) > c.limit {
		panic(constOverflow(line))
	}
}

func (c *constCounter) function(stmts []ast.Stmt) {
	outer := c.seen
	c.seen = map[string]struct{}{}
	c.stmts(stmts)
	c.seen = outer
}

func (c *constCounter) stmts(stmts []ast.Stmt) {
	for _, s := range stmts {
		c.stmt(s)
	}
}

func (c *constCounter) exprs(es []ast.Expr) {
	for _, e := range es {
		c.expr(e)
	}
}

func (c *constCounter) stmt(s ast.Stmt) {
	switch s := s.(type) {
	case *ast.AssignStmt:
		c.exprs(s.Lhs)
		c.exprs(s.Rhs)
	case *ast.LocalAssignStmt:
		c.exprs(s.Exprs)
	case *ast.FuncCallStmt:
		c.expr(s.Expr)
	case *ast.DoBlockStmt:
		c.stmts(s.Stmts)
	case *ast.WhileStmt:
		c.expr(s.Condition)
		c.stmts(s.Stmts)
	case *ast.RepeatStmt:
		c.stmts(s.Stmts)
		c.expr(s.Condition)
	case *ast.IfStmt:
		c.expr(s.Condition)
		c.stmts(s.Then)
		c.stmts(s.Else)
	case *ast.NumberForStmt:
		c.expr(s.Init)
		c.expr(s.Limit)
		c.expr(s.Step)
		c.stmts(s.Stmts)
	case *ast.GenericForStmt:
		c.exprs(s.Exprs)
		c.stmts(s.Stmts)
	case *ast.FuncDefStmt:
		if s.Name != nil {
			c.expr(s.Name.Func)
			c.expr(s.Name.Receiver)
			if s.Name.Method != "" {
				c.add('s', s.Name.Method, s.Line())
			}
		}
		c.expr(s.Func)
	case *ast.ReturnStmt:
		c.exprs(s.Exprs)
	}
}

func (c *constCounter) expr(e ast.Expr) {
	switch e := e.(type) {
	case nil:
	case *ast.NumberExpr:
		v := e.Value
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			v = strconv.FormatFloat(f, 'g', -1, 64)
		}
		c.add('n', v, e.Line())
	case *ast.StringExpr:
		c.add('s', e.Value, e.Line())
	case *ast.IdentExpr:
		c.add('s', e.Value, e.Line())
	case *ast.AttrGetExpr:
		c.expr(e.Object)
		c.expr(e.Key)
	case *ast.TableExpr:
		for _, f := range e.Fields {
			c.expr(f.Key)
			c.expr(f.Value)
		}
	case *ast.FuncCallExpr:
		c.expr(e.Func)
		c.expr(e.Receiver)
		if e.Method != "" {
			c.add('s', e.Method, e.Line())
		}
		c.exprs(e.Args)
	case *ast.LogicalOpExpr:
		c.expr(e.Lhs)
		c.expr(e.Rhs)
	case *ast.RelationalOpExpr:
		c.expr(e.Lhs)
		c.expr(e.Rhs)
	case *ast.StringConcatOpExpr:
		c.expr(e.Lhs)
		c.expr(e.Rhs)
	case *ast.ArithmeticOpExpr:
		c.expr(e.Lhs)
		c.expr(e.Rhs)
	case *ast.UnaryMinusOpExpr:
		c.expr(e.Expr)
	case *ast.UnaryNotOpExpr:
		c.expr(e.Expr)
	case *ast.UnaryLenOpExpr:
		c.expr(e.Expr)
	case *ast.FunctionExpr:
		c.function(e.Stmts)
	}
}

// constantsError is the load error for a function over maxConstants.
func constantsError(file string, line int) *Error {
	return &Error{File: file, Line: line, Msg: fmt.Sprintf(
		"function has more than %d distinct constants (literals and names), which gopher-lua compiles in quadratic time: split the data across functions or modules", maxConstants)}
}
