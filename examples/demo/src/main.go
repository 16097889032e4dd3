package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
)

var version = "dev"

func main() {
	check := flag.Bool("check", false, "exit 0 if the server answers")
	flag.String("config", "", "configuration file")
	flag.Parse()
	if *check {
		if _, err := http.Get("http://127.0.0.1:8080/"); err != nil {
			os.Exit(1)
		}
		return
	}
	http.Handle("/static/", http.StripPrefix("/static/", http.FileServer(http.Dir("/srv/static"))))
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from kiln's demo, version %s\n", version)
	})
	_ = http.ListenAndServe(":8080", nil)
}
