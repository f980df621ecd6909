module edgeai.io/benchmarks/grpcload

go 1.23.0

require golang.org/x/net v0.42.0

require golang.org/x/text v0.27.0 // indirect
