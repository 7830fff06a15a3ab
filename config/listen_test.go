package config_test

import (
	"fmt"

	"github.com/keystone-gateway/keystone/config"
)

func ExampleCheckListen() {
	fmt.Println(config.CheckListen("8080"))
	fmt.Println(config.CheckListen("127.0.0.1:8080"))
	// Output:
	// expected host:port such as ":8080", got "8080" (did you mean ":8080"?)
	// <nil>
}
