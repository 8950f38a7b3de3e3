// swift-tools-version:6.0
// The tether Swift package, at the repository root so an app adds it by the repository URL.
// The sources live in bindings/swift next to the other bindings; see bindings/swift/README.md.
// libtether itself is not built by SwiftPM: build it with cargo and pass its directory to the
// linker (or, on Apple platforms, ship it as an XCFramework binaryTarget; see the README).
import PackageDescription

let package = Package(
    name: "tether",
    platforms: [.macOS(.v13), .iOS(.v16)],
    products: [
        .library(name: "Tether", targets: ["Tether"]),
    ],
    targets: [
        // include/tether.h through a module map that links -ltether.
        .systemLibrary(name: "CTether", path: "bindings/swift/Sources/CTether"),
        .target(name: "Tether", dependencies: ["CTether"], path: "bindings/swift/Sources/Tether"),
        .testTarget(name: "TetherTests", dependencies: ["Tether"], path: "bindings/swift/Tests/TetherTests"),
    ]
)
