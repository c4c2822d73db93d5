// The gpt2 program: subcommands train, eval, sample, prepare, ... (filled in by src/cli/*.cpp).
int main() { return 0; }
