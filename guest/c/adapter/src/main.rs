fn main() -> std::io::Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .expect("usage: write-wasi-adapter OUT.wasm");
    std::fs::write(
        out,
        wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    )
}
