// Shared build script (included by every crate that links an executable against libtorch).
//
// Why: by default a binary linked against the PyPI wheel's libtorch has no rpath, so it fails at
// start-up with "libtorch_cpu.so: cannot open shared object file", and the linker drops
// `libtorch_cuda.so` because no symbol of it is referenced directly (tch-rs issue #980), which
// would silently disable CUDA. torch-sys exports the directory it linked against as
// `DEP_TCH_LIBTORCH_LIB` (it declares `links = "tch"`), so we bake that directory into the rpath
// and force the CUDA library to stay linked when it exists.
//
// A crate with a build script of its own (rlhf-model, which compiles a C++ shim) includes this
// file as a module and calls `emit_rpath`.
#[allow(dead_code)]
fn main() {
    emit_rpath();
}

pub fn emit_rpath() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=torch-sys did not report its libtorch directory; no rpath set");
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    let cuda = std::path::Path::new(&dir).join("libtorch_cuda.so");
    if cuda.exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,-ltorch,--as-needed");
    }
}
