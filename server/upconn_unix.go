//go:build unix

package server

import "syscall"

// canPeek reports that upConn can look at an idle connection without
// reading from it.
const canPeek = true

// peek is upConn.peekFn: one recv of a byte with MSG_PEEK|MSG_DONTWAIT, which
// leaves any data in the socket and never blocks.
func (c *upConn) peek(fd uintptr) bool {
	_, _, c.peekErr = syscall.Recvfrom(int(fd), c.peekBuf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return true
}
