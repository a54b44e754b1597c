// Command funcsize lists the functions of a Go tree that are longer than
// -lines lines or above -cyclo cyclomatic complexity, and exits 1 when
// there is one. Test files (_test.go) are not read. Lines inside a
// table, a composite literal spanning several lines that holds no
// function literal, do not count toward a function's length: a table
// of data is read row by row, not followed like code.
//
// Cyclomatic complexity is counted as gocyclo counts it: 1, plus one for
// each if, for, range, case and select case other than default, && and
// ||. The function literals inside a function count toward it.
//
//	go run ./internal/funcsize [-lines 60] [-cyclo 20] [dir]
package main

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// finding is one function over a limit.
type finding struct {
	pos   token.Position
	name  string
	lines int
	cyclo int
}

func main() {
	maxLines := flag.Int("lines", 60, "longest function allowed, in lines, tables not counted")
	maxCyclo := flag.Int("cyclo", 20, "highest cyclomatic complexity allowed")
	flag.Parse()
	root := "."
	if flag.NArg() > 0 {
		root = flag.Arg(0)
	}
	found, err := scan(root, *maxLines, *maxCyclo)
	if err != nil {
		fmt.Fprintln(os.Stderr, "funcsize:", err)
		os.Exit(2)
	}
	for _, f := range found {
		fmt.Printf("%s:%d: %s: %d lines, cyclomatic %d\n", f.pos.Filename, f.pos.Line, f.name, f.lines, f.cyclo)
	}
	if len(found) > 0 {
		fmt.Fprintf(os.Stderr, "funcsize: %d functions over %d lines or cyclomatic %d\n", len(found), *maxLines, *maxCyclo)
		os.Exit(1)
	}
}

// scan parses every non-test Go file below root (skipping testdata,
// vendor and hidden directories) and returns the functions over a limit.
func scan(root string, maxLines, maxCyclo int) ([]finding, error) {
	fset := token.NewFileSet()
	var found []finding
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (name == "testdata" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		file, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		for _, decl := range file.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			f := finding{
				pos:   fset.Position(fn.Pos()),
				name:  funcName(fn),
				lines: length(fset, fn),
				cyclo: cyclomatic(fn),
			}
			if f.lines > maxLines || f.cyclo > maxCyclo {
				found = append(found, f)
			}
		}
		return nil
	})
	sort.Slice(found, func(i, j int) bool {
		if found[i].pos.Filename != found[j].pos.Filename {
			return found[i].pos.Filename < found[j].pos.Filename
		}
		return found[i].pos.Line < found[j].pos.Line
	})
	return found, err
}

// funcName is Name or (Recv).Name.
func funcName(fn *ast.FuncDecl) string {
	if fn.Recv == nil || len(fn.Recv.List) == 0 {
		return fn.Name.Name
	}
	t := fn.Recv.List[0].Type
	if s, ok := t.(*ast.StarExpr); ok {
		t = s.X
	}
	switch r := t.(type) {
	case *ast.IndexExpr:
		t = r.X
	case *ast.IndexListExpr:
		t = r.X
	}
	if id, ok := t.(*ast.Ident); ok {
		return "(" + id.Name + ")." + fn.Name.Name
	}
	return fn.Name.Name
}

// length is the number of lines from func to the closing brace, less
// the lines of the tables in it (after their first line).
func length(fset *token.FileSet, fn *ast.FuncDecl) int {
	n := fset.Position(fn.End()).Line - fset.Position(fn.Pos()).Line + 1
	ast.Inspect(fn.Body, func(node ast.Node) bool {
		lit, ok := node.(*ast.CompositeLit)
		if !ok {
			return true
		}
		if hasFuncLit(lit) {
			return true
		}
		n -= fset.Position(lit.End()).Line - fset.Position(lit.Pos()).Line
		return false
	})
	return n
}

// hasFuncLit reports whether code (a function literal) sits inside node.
func hasFuncLit(node ast.Node) bool {
	found := false
	ast.Inspect(node, func(n ast.Node) bool {
		if _, ok := n.(*ast.FuncLit); ok {
			found = true
		}
		return !found
	})
	return found
}

// cyclomatic is gocyclo's count for fn.
func cyclomatic(fn *ast.FuncDecl) int {
	c := 1
	ast.Inspect(fn, func(node ast.Node) bool {
		switch n := node.(type) {
		case *ast.IfStmt, *ast.ForStmt, *ast.RangeStmt:
			c++
		case *ast.CaseClause:
			if n.List != nil {
				c++
			}
		case *ast.CommClause:
			if n.Comm != nil {
				c++
			}
		case *ast.BinaryExpr:
			if n.Op == token.LAND || n.Op == token.LOR {
				c++
			}
		}
		return true
	})
	return c
}
