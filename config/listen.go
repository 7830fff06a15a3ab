package config

import "errors"

// CheckListen reports what is wrong with addr as a server.listen value, with
// the message `keystone check` gives for the key, or nil when it is valid.
// The command line checks `--listen` with it, so a flag and the config key
// get the same help:
//
//	expected host:port such as ":8080", got "8080" (did you mean ":8080"?)
func CheckListen(addr string) error {
	if msg := checkListen(addr); msg != "" {
		return errors.New(msg)
	}
	return nil
}
