// rlhf-model's build script: the shared rpath set-up, plus the C++ shim (`csrc/`) for what tch does
// not bind (CPU autocast, c10d's process groups, the fused AdamW kernel), compiled against the same libtorch headers as torch-sys's own shim.

#[path = "../../build/libtorch_rpath.rs"]
mod rpath;

fn main() {
    rpath::emit_rpath();
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    println!("cargo:rerun-if-changed=csrc/dist.cpp");
    println!("cargo:rerun-if-changed=csrc/optim.cpp");
    println!("cargo:rerun-if-changed=csrc/profile.cpp");
    println!("cargo:rerun-if-changed=csrc/gelu.cpp");
    println!("cargo:rerun-if-changed=csrc/linear.cpp");
    println!("cargo:rerun-if-changed=csrc/shim.h");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("torch-sys did not report its libtorch directory (DEP_TCH_LIBTORCH_LIB)");
    };
    // torch-sys reports `<torch>/lib`; the headers sit beside it in `<torch>/include`.
    let root = std::path::Path::new(&lib)
        .parent()
        .expect("libtorch lib dir has a parent")
        .to_path_buf();
    let include = root.join("include");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        // at::parallel_for is inline: without OpenMP it would run on one thread. With it, the
        // shim's loops share libtorch's OpenMP threads (the same libgomp.so.1 at run time).
        .flag("-fopenmp")
        .file("csrc/autocast.cpp")
        .file("csrc/dist.cpp")
        .file("csrc/optim.cpp")
        .file("csrc/profile.cpp")
        .file("csrc/gelu.cpp")
        .file("csrc/linear.cpp")
        .compile("rlhf_torch_ext");
    println!("cargo:rustc-link-lib=gomp");
}
