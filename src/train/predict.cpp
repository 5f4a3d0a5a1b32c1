#include "train/predict.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <boost/program_options.hpp>

#include "core/error.h"
#include "io/cli.h"
#include "core/stream.h"
#include "data/dataset.h"
#include "data/jpeg_codec.h"
#include "data/resize.h"
#include "io/metrics.h"
#include "kernels/cast.h"
#include "kernels/cpu_threads.h"
#include "model/vit.h"
#include "train/hf_checkpoint.h"
#ifdef VIT_WITH_CUDA
#include "kernels/gpu_context.h"
#endif

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace vit {

namespace {

struct Options {
  std::string model, data, split = "test", images, output = "predictions.csv", device = "auto";
  std::string precision = "fp32", attention = "cudnn";
  int batch = 32, threads = 0;
};

// Where the images come from: rows of an HDF5 split or files of a folder.
struct Source {
  std::vector<std::string> names;   // file (folder or HDF5 "files") or index
  std::vector<int32_t> labels;      // -1 where unknown
  std::function<void(size_t, uint8_t*)> read;  // image i as (S, S, 3) uint8
};

Source hdf5_source(const Options& o, int S, const std::vector<std::string>& classes) {
  auto ds = std::make_shared<data::Hdf5Dataset>(data::Hdf5Dataset::open(o.data, S));
  VIT_USER_CHECK(ds->info().image_size == S, o.data, ": image_size is ", ds->info().image_size,
                 " but the model takes ", S, " (prepare the data with vit_data_prep --image-size ", S, ")");
  const bool same_classes = ds->info().class_names == classes;
  Source src;
  const int64_t n = ds->size(o.split);
  for (int64_t i = 0; i < n; ++i) {
    const std::string f = ds->file(o.split, i);
    src.names.push_back(f.empty() ? std::to_string(i) : f);
    src.labels.push_back(same_classes ? static_cast<int32_t>(ds->label(o.split, i)) : -1);
  }
  if (!same_classes) {
    std::fprintf(stderr, "vit_hpc predict: %s has other class names than the model: accuracy not computed\n",
                 o.data.c_str());
  }
  const std::string split = o.split;
  src.read = [ds, split](size_t i, uint8_t* out) { ds->read_image(split, static_cast<int64_t>(i), out); };
  return src;
}

Source folder_source(const Options& o, int S, const std::vector<std::string>& classes) {
  VIT_USER_CHECK(fs::is_directory(o.images), o.images, ": not a folder of images");
  Source src;
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(o.images)) {
    if (!e.is_regular_file()) continue;
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
    if (ext == ".jpg" || ext == ".jpeg") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  VIT_USER_CHECK(!files.empty(), o.images, ": holds no .jpg/.jpeg images");
  for (const auto& f : files) {
    src.names.push_back(f.lexically_relative(o.images).string());
    const std::string parent = f.parent_path().filename().string();
    const auto it = std::find(classes.begin(), classes.end(), parent);
    src.labels.push_back(it == classes.end() ? -1 : static_cast<int32_t>(it - classes.begin()));
  }
  auto codec = std::make_shared<data::JpegCodec>();
  src.read = [files, codec, S](size_t i, uint8_t* out) {
    std::ifstream in(files[i], std::ios::binary);
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<uint8_t> rgb;
    int w = 0, h = 0;
    std::string why;
    if (!codec->decode_rgb(bytes.data(), bytes.size(), &rgb, &w, &h, &why)) {
      throw UserError(str_cat(files[i].string(), ": not a decodable JPEG (", why, ")"));
    }
    data::resize_rgb_antialiased(rgb.data(), w, h, out, S, S);
  };
  return src;
}

int run_predict(const Options& o) {
  // Messages here carry no "vit_hpc predict: " prefix: predict_main adds it once.
  VIT_USER_CHECK(!o.model.empty(), "--model is required (a folder with model.safetensors + config.json)");
  VIT_USER_CHECK(o.data.empty() != o.images.empty(), "give exactly one of --data FILE.h5 or --images FOLDER");
  VIT_USER_CHECK(o.batch >= 1, "--batch must be >= 1");
  VIT_USER_CHECK(o.device == "auto" || o.device == "cpu" || o.device == "cuda", "--device '", o.device,
                 "' is not allowed (allowed: auto, cpu, cuda)");
  VIT_USER_CHECK(o.precision == "fp32" || o.precision == "bf16" || o.precision == "fp16", "--precision '",
                 o.precision, "' is not allowed (allowed: fp32, bf16, fp16)");
  VIT_USER_CHECK(o.attention == "cudnn" || o.attention == "cublas", "--attention '", o.attention,
                 "' is not allowed (allowed: cudnn, cublas)");
  std::vector<std::string> classes;
  const model::ViTConfig cfg = train::read_hf_config(o.model, &classes);
  for (int k = 0; k < cfg.num_classes; ++k) {
    if (k >= static_cast<int>(classes.size())) classes.push_back("");
    if (classes[k].empty()) classes[k] = "LABEL_" + std::to_string(k);
  }
  const train::HfImport weights = train::load_hf_vit(o.model, cfg, 0);
  VIT_USER_CHECK(!weights.head_reinitialised, o.model, ": the checkpoint has no classifier for its ",
                 cfg.num_classes, " labels; predict needs a trained head");
  Source src = o.data.empty() ? folder_source(o, cfg.image_size, classes) : hdf5_source(o, cfg.image_size, classes);

  // Device and compute copy of the weights.
  Context ctx;
  const bool want_gpu = o.device == "cuda" || (o.device == "auto" && cuda_device_count() > 0);
  VIT_USER_CHECK(!want_gpu || cuda_device_count() > 0, "--device cuda, but no GPU is visible",
                 built_with_cuda() ? "" : " (this vit_hpc was built without CUDA)", " (allowed here: cpu, auto)");
  VIT_USER_CHECK(want_gpu || o.precision == "fp32", "--precision ", o.precision,
                 " needs a GPU, but this prediction runs on the CPU (allowed on the CPU: fp32)");
#ifdef VIT_WITH_CUDA
  std::unique_ptr<GpuRuntime> gpu;
  if (want_gpu) {
    gpu = std::make_unique<GpuRuntime>(0, false);
    ctx = gpu->context();
  }
#endif
  kernels::set_cpu_threads(o.threads);
  model::ComputeConfig compute;
  compute.dtype = parse_dtype(o.precision);
  compute.attention = o.attention == "cublas" ? kernels::AttentionImpl::Cublas : kernels::AttentionImpl::CuDNN;
  model::ViTModel vit(cfg, compute, ctx, o.batch);
  if (!vit.attention_note().empty()) std::fprintf(stderr, "vit_hpc predict: attention: %s\n", vit.attention_note().c_str());
  const int64_t N = vit.layout().total();
  Buffer master(N * 4, ctx.device), params(N * dtype_size(compute.dtype), ctx.device);
  copy_bytes(master.data(), ctx.device, weights.params.data(), Device::CPU, N * 4);
  kernels::cast(ctx, tensor_of(params, compute.dtype, {N}), tensor_of(master, DType::F32, {N}));
  vit.bind(tensor_of(params, compute.dtype, {N}), Tensor());

  const int S = cfg.image_size, K = cfg.num_classes;
  const size_t image_bytes = static_cast<size_t>(S) * S * 3;
  std::vector<uint8_t> host_images(image_bytes * o.batch);
  std::vector<int32_t> host_labels(static_cast<size_t>(o.batch));
  Buffer dev_images(host_images.size(), ctx.device), dev_labels(host_labels.size() * 4, ctx.device);
  Buffer logits32(static_cast<size_t>(o.batch) * K * 4, ctx.device);
  std::ostringstream csv;
  csv << "file,label,predicted";
  for (const auto& c : classes) csv << ",logit_" << c;
  csv << "\n";
  int64_t labelled = 0, correct = 0;
  std::vector<float> logits(static_cast<size_t>(o.batch) * K);
  for (size_t first = 0; first < src.names.size(); first += o.batch) {
    const int B = static_cast<int>(std::min<size_t>(o.batch, src.names.size() - first));
    for (int b = 0; b < B; ++b) {
      src.read(first + b, host_images.data() + b * image_bytes);
      host_labels[b] = std::max(0, src.labels[first + b]);  // the loss needs some label; unused here
    }
    copy_bytes(dev_images.data(), ctx.device, host_images.data(), Device::CPU, image_bytes * B);
    copy_bytes(dev_labels.data(), ctx.device, host_labels.data(), Device::CPU, B * 4);
    vit.forward(Tensor(dev_images.data(), DType::U8, ctx.device, {B, S, S, 3}),
                Tensor(dev_labels.data(), DType::I32, ctx.device, {B}), B);
    kernels::cast(ctx, tensor_of(logits32, DType::F32, {B, K}), vit.logits(B));
    synchronize_stream(ctx.stream);
    copy_bytes(logits.data(), Device::CPU, logits32.data(), ctx.device, static_cast<size_t>(B) * K * 4);
    for (int b = 0; b < B; ++b) {
      const float* l = logits.data() + static_cast<size_t>(b) * K;
      const int pred = static_cast<int>(std::max_element(l, l + K) - l);
      const int32_t label = src.labels[first + b];
      std::string name = src.names[first + b];
      if (name.find_first_of(",\"") != std::string::npos) name = "\"" + name + "\"";
      csv << name << "," << (label >= 0 ? classes[label] : "") << "," << classes[pred];
      char buf[32];
      for (int k = 0; k < K; ++k) {
        std::snprintf(buf, sizeof buf, ",%.7g", l[k]);
        csv << buf;
      }
      csv << "\n";
      if (label >= 0) {
        ++labelled;
        correct += pred == label;
      }
    }
  }
  io::write_file_atomic(o.output, csv.str());
  std::printf("vit_hpc predict: %zu images on %s (%s) -> %s\n", src.names.size(), device_name(ctx.device),
              o.precision.c_str(), o.output.c_str());
  if (labelled > 0) {
    std::printf("accuracy %.4f (%lld of %lld labelled images)\n", static_cast<double>(correct) / labelled,
                static_cast<long long>(correct), static_cast<long long>(labelled));
  }
  return 0;
}

}  // namespace

int predict_main(int argc, char** argv) {
  Options o;
  po::options_description opts("vit_hpc predict options");
  opts.add_options()
      ("model", po::value(&o.model), "checkpoint folder: model.safetensors + config.json (vit_hpc export or transformers)")
      ("data", po::value(&o.data), "an HDF5 file made by vit_data_prep")
      ("split", po::value(&o.split)->default_value("test"), "split of --data")
      ("images", po::value(&o.images), "a folder of .jpg images (labelled when in <class>/ subfolders)")
      ("output", po::value(&o.output)->default_value("predictions.csv"), "CSV file to write")
      ("device", po::value(&o.device)->default_value("auto"), "auto | cpu | cuda")
      ("precision", po::value(&o.precision)->default_value("fp32"), "fp32 | bf16 | fp16 (GPU only for 16-bit)")
      ("attention", po::value(&o.attention)->default_value("cudnn"), "cudnn | cublas (GPU attention path)")
      ("batch", po::value(&o.batch)->default_value(32), "images per forward pass")
      ("threads", po::value(&o.threads)->default_value(0), "CPU threads (0 = all)")
      ("help,h", "print this help");
  try {
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
    if (vm.count("help")) {
      std::cout << "Usage: vit_hpc predict --model DIR (--data FILE.h5 [--split test] | --images DIR) [options]\n\n"
                << opts;
      return 0;
    }
    return run_predict(o);
  } catch (...) {
    return subcommand_failure("vit_hpc predict");
  }
}

}  // namespace vit
