package server

import (
	"fmt"
	"os"
	"sync"
)

// logFile is the access log file (logging.access_log_file): appended to,
// and reopened by path on Reopen, so that logrotate can rename the file
// and signal the gateway (SIGUSR1) to start a new one at the same path
// without losing a line. Its methods are safe for concurrent use.
type logFile struct {
	path string

	// mu guards f: Write holds it for one line, Reopen to swap the file.
	mu sync.Mutex
	f  *os.File
}

func openLogFile(path string) (*logFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("server: access log: %w", err)
	}
	return &logFile{path: path, f: f}, nil
}

// Write appends one log line. slog handlers call it once per record.
func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(p)
}

// Reopen opens the path anew and closes the old file. If the path cannot
// be opened, the old file stays in use and the error is returned: the
// lines keep going somewhere rather than nowhere.
func (l *logFile) Reopen() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("server: reopen access log: %w", err)
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	return old.Close()
}

// Close closes the file.
func (l *logFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}
