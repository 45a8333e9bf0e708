from slatewise.cli import main

if __name__ == "__main__":  # spawn-safe: vLLM's CPU engine re-imports __main__
    main()
