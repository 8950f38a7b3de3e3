// swift-tools-version:5.7
// The tether Swift package: a system-library target over include/tether.h and the `Tether`
// wrapper. Build the native library first, then point the linker at it:
//   cargo build --release -p tether --lib
//   swift build -Xlinker -L$(pwd)/../../target/release
import PackageDescription

let package = Package(
    name: "Tether",
    platforms: [.macOS(.v12), .iOS(.v15)],
    products: [
        .library(name: "Tether", targets: ["Tether"]),
    ],
    targets: [
        .systemLibrary(name: "CTether", path: "Sources/CTether"),
        .target(name: "Tether", dependencies: ["CTether"], path: "Sources/Tether"),
        .testTarget(name: "TetherTests", dependencies: ["Tether"], path: "Tests/TetherTests"),
    ]
)
